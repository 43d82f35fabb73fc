"""Writes and state changes of the registry: tokens and devices."""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import QuerySet
from django.utils import timezone

from acp.models import ApiToken, Device

TOKEN_PREFIX = "acp_"


def token_hash(raw_token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(raw_token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    raw: str


def token_create(*, user, device=None, name: str = "", expires_in: timedelta | None = None) -> IssuedToken:
    """Mint a token for `user` (scoped to `device` if given). The raw value exists only in the result."""
    if device is not None and device.user_id != user.pk:
        raise ValueError("A device token must belong to the device's owner.")
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = timezone.now()
    token = ApiToken.objects.create(
        user=user,
        device=device,
        name=name,
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
