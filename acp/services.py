"""Writes and state changes of the registry: API keys, pairing tokens and devices."""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from acp import domain
from acp.choices import FULL_SCOPES, ApiTokenKind, PairingTokenStatus
from acp.models import ApiToken, Device, PairingFailure, PairingToken

TOKEN_PREFIX = "acp_"
PAIRING_TOKEN_PREFIX = "acpp_"  # not an API key: refused by the bearer check before any lookup


def token_hash(raw_token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(raw_token.encode()).hexdigest()


def _new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)  # 256 random bits


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    raw: str


def token_create(
    *,
    user,
    device=None,
    name: str = "",
    expires_in: timedelta | None = None,
    scopes=None,
    pairing_token: PairingToken | None = None,
) -> IssuedToken:
    """Mint a key for `user` (a device key if `device` is given; every scope unless `scopes` narrows it).

    The raw value exists only in the result.
    """
    if device is not None and device.user_id != user.pk:
        raise ValueError("A device token must belong to the device's owner.")
    raw = _new_secret(TOKEN_PREFIX)
    now = timezone.now()
    token = ApiToken.objects.create(
        user=user,
        kind=ApiTokenKind.DEVICE if device is not None else ApiTokenKind.USER,
        device=device,
        name=name,
        scopes=[scope for scope in FULL_SCOPES if scopes is None or scope in scopes],
        pairing_token=pairing_token,
        key_prefix=raw[:12],
        key_hash=token_hash(raw),
        created_at=now,
        expires_at=now + expires_in if expires_in else None,
    )
    return IssuedToken(token=token, raw=raw)


def token_revoke(*, token: ApiToken, now=None) -> bool:
    """Revoke `token`. Returns False when it was already revoked (nothing changes)."""
    now = now or timezone.now()
    updated = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now)
    if updated:
        token.revoked_at = now
    return bool(updated)


def token_touch(*, token: ApiToken, now=None) -> None:
    """Record use, at most once per ACP_TOKEN_TOUCH_INTERVAL so reads stay free of writes."""
    from django.conf import settings

    now = now or timezone.now()
    interval = timedelta(seconds=settings.ACP_TOKEN_TOUCH_INTERVAL)
    if token.last_used_at is None or now - token.last_used_at >= interval:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now


def device_heartbeat(*, device: Device, now=None, **fields) -> Device:
    """Mark `device` seen now, with the versions and capabilities it reports."""
    now = now or timezone.now()
    for name, value in fields.items():
        setattr(device, name, value)
    device.last_seen_at = now
    device.save(update_fields=[*fields, "last_seen_at", "updated_at"])
    return device


def device_touch(*, devices: QuerySet[Device], device_id, now=None) -> bool:
    """Mark the device seen if it is one of `devices` (the caller's): one UPDATE, without loading it.

    Daemon long-polls count as heartbeats, and one arrives per daemon every 30 s. False: no such device.
    """
    now = now or timezone.now()
    return devices.filter(pk=device_id).update(last_seen_at=now, updated_at=now) > 0


@transaction.atomic
def device_delete(*, device: Device, now=None) -> int:
    """Delete `device` after revoking its keys (they stay listed, revoked). Returns how many it revoked.

    The device row is locked so a concurrent pairing exchange cannot mint it a key in between.
    """
    now = now or timezone.now()
    device = Device.objects.select_for_update().get(pk=device.pk)
    revoked = ApiToken.objects.filter(device=device, revoked_at__isnull=True).update(revoked_at=now)
    device.delete()
    return revoked


# --- pairing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedPairingToken:
    pairing_token: PairingToken
    raw: str


@dataclass(frozen=True)
class Pairing:
    """What an exchange made: the completed pairing token, the device, and its new key (raw value once)."""

    pairing_token: PairingToken
    device: Device
    key: IssuedToken


def pairing_token_create(*, user, name: str = "", ttl: timedelta | None = None, now=None) -> IssuedPairingToken:
    """A pending pairing token of `user`, valid for `ttl` (default ACP_PAIRING_TOKEN_TTL). Raw value once."""
    now = now or timezone.now()
    ttl = ttl or timedelta(seconds=settings.ACP_PAIRING_TOKEN_TTL)
    raw = _new_secret(PAIRING_TOKEN_PREFIX)
    pairing_token = PairingToken.objects.create(
        user=user, name=name, token_prefix=raw[:12], token_hash=token_hash(raw), expires_at=now + ttl, created_at=now
    )
    return IssuedPairingToken(pairing_token=pairing_token, raw=raw)


@transaction.atomic
def pairing_token_revoke(*, pairing_token: PairingToken, now=None) -> domain.Outcome[PairingToken]:
    """pending (or expired) → revoked; revoked again changes nothing; a completed one → InvalidTransition."""
    pairing_token = PairingToken.objects.select_for_update().get(pk=pairing_token.pk)
    if pairing_token.status == PairingTokenStatus.REVOKED:
        return domain.Outcome(pairing_token, changed=False)
    if pairing_token.status == PairingTokenStatus.COMPLETED:
        raise domain.InvalidTransition(pairing_token, "This pairing token was already exchanged; revoke its key.")
    pairing_token.status = PairingTokenStatus.REVOKED
    pairing_token.save(update_fields=["status", "updated_at"])
    return domain.Outcome(pairing_token, changed=True)


def pairing_token_exchange(*, raw: str, address: str, device_fields: dict, now=None) -> Pairing:
    """Trade a pending pairing token for a device and that device's key, exactly once.

    The device is the user's device of the same name and hostname (re-paired: its earlier paired keys are
    revoked) or a new one. A used token → Conflict, an expired or revoked one → Gone, an unknown one →
    Unauthenticated, recorded against `address` for the per-address limit (`selectors.pairing_retry_after`).
    The token's row lock serialises concurrent exchanges; `ApiToken.pairing_token` (unique) is the backstop.
    """
    now = now or timezone.now()
    try:
        return _pairing_exchange(raw=raw, device_fields=device_fields, now=now)
    except domain.Unauthenticated:
        window_start = now - timedelta(seconds=settings.ACP_PAIRING_FAILURE_WINDOW)
        PairingFailure.objects.filter(created_at__lt=window_start).delete()  # the table holds one window
        PairingFailure.objects.create(address=address, created_at=now)
        raise


@transaction.atomic
def _pairing_exchange(*, raw: str, device_fields: dict, now) -> Pairing:
    pairing_token = PairingToken.objects.select_for_update().filter(token_hash=token_hash(raw)).first()
    if pairing_token is None:
        raise domain.Unauthenticated("Unknown pairing token.")
    status = pairing_token.current_status(now)
    if status == PairingTokenStatus.COMPLETED:
        raise domain.Conflict(None, "This pairing token has already been exchanged; create a new one.")
    if status != PairingTokenStatus.PENDING:
        raise domain.Gone(f"This pairing token is {status}; create a new one.")
    device = _paired_device(user=pairing_token.user, fields=device_fields)
    ApiToken.objects.filter(device=device, pairing_token__isnull=False, revoked_at__isnull=True).update(revoked_at=now)
    key = token_create(
        user=pairing_token.user, device=device, name=f"{device.name} (paired)", pairing_token=pairing_token
    )
    pairing_token.status = PairingTokenStatus.COMPLETED
    pairing_token.device = device
    pairing_token.completed_at = now
    pairing_token.save(update_fields=["status", "device", "completed_at", "updated_at"])
    return Pairing(pairing_token=pairing_token, device=device, key=key)


def _paired_device(*, user, fields: dict) -> Device:
    """The user's device with this name and hostname, updated with what the machine reports, or a new one."""
    device = (
        Device.objects.select_for_update()
        .filter(user=user, name=fields["name"], hostname=fields.get("hostname", ""))
        .order_by("-created_at")
        .first()
    )
    if device is None:
        return Device.objects.create(user=user, **fields)
    for name, value in fields.items():
        setattr(device, name, value)
    device.save(update_fields=[*fields, "updated_at"])
    return device
