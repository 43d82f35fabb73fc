"""Writes and state changes of the registry: API keys, pairing tokens and devices."""

import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from acp import domain, realtime
from acp.choices import FULL_SCOPES, ApiTokenKind, PairingTokenStatus
from acp.domain import InvalidInput, Outcome
from acp.models import ApiToken, Device, Environment, PairingFailure, PairingToken
from acp.serving import rawsql

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
        _wake_channels(token)
    return bool(updated)


def _wake_channels(token: ApiToken) -> None:
    """Wake the machine channels `token` may hold (its device's, or any of its user's), which then find it revoked
    and end: a revoked key gets no more work."""
    if token.device_id is not None:
        devices = [token.device_id]
    else:
        devices = Device.objects.filter(user_id=token.user_id).values_list("pk", flat=True)
    realtime.notify(*(realtime.machine_key(device_id) for device_id in devices))


def token_touch(*, token: ApiToken, now=None) -> None:
    """Record use, at most once per ACP_TOKEN_TOUCH_INTERVAL so reads stay free of writes."""
    statement = tokens_use_statement(tokens=[token], now=now or timezone.now())
    if statement is not None:
        with rawsql.database().cursor() as cursor:
            cursor.execute(*statement)


def tokens_use_statement(*, tokens, now) -> tuple[str, list] | None:
    """The UPDATE that records the use at `now` of those of `tokens` due one (`token_touch`), and its parameters;
    they read as used from then on. None: none is due.

    For a caller that sends it with a statement of its own (a channel's open, a batch of them), saving a round trip
    to the database: a reconnect storm touches every daemon's token (bench/channel.py). Written out for the same
    reason."""
    from django.conf import settings

    interval = timedelta(seconds=settings.ACP_TOKEN_TOUCH_INTERVAL)
    due = {token.pk: token for token in tokens if token.last_used_at is None or now - token.last_used_at >= interval}
    if not due:
        return None
    for token in due.values():
        token.last_used_at = now
    db = rawsql.database()
    params = [
        rawsql.db_value(db, ApiToken, "last_used_at", now),
        *(rawsql.db_value(db, ApiToken, "id", pk) for pk in due),
    ]
    return _tokens_touch_sql(db.vendor, len(due)), params


@functools.lru_cache(maxsize=64)  # one per database vendor (names are quoted by its backend) and number of tokens
def _tokens_touch_sql(vendor: str, count: int) -> str:
    """On PostgreSQL several tokens are locked in key order first (a batch of channel opens touches the tokens
    of several daemons, and a user's token may be in two batches at once)."""
    update = f"UPDATE {rawsql.quote(ApiToken._meta.db_table)} SET {rawsql.column(ApiToken, 'last_used_at')} = %s"
    wanted = f"{rawsql.column(ApiToken, 'id')} {rawsql.equal_to_one_of(count)}"
    if vendor == "postgresql" and count > 1:
        locked, joined = rawsql.locked_in_key_order(ApiToken, wanted)
        return f"{update} FROM {locked} WHERE {joined}"
    return f"{update} WHERE {wanted}"


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


def device_channels_refresh(*, channel_ids, now=None) -> int:
    """Mark seen, in one UPDATE, the devices whose channel is one of `channel_ids` (a process's open channels; a
    replaced one no longer matches). How many were.

    On PostgreSQL the ids go as one array parameter: building a 10,000-parameter `IN` through the ORM held the GIL
    for a quarter of a second every interval, which the event loop's requests waited out."""
    now = now or timezone.now()
    channel_ids = list(channel_ids)
    db = rawsql.database()
    if db.vendor == "postgresql":
        with db.cursor() as cursor:
            cursor.execute(_channels_refresh_sql(db.vendor), [now, now, channel_ids])
            return cursor.rowcount
    chunks = (channel_ids[start : start + PRESENCE_CHUNK] for start in range(0, len(channel_ids), PRESENCE_CHUNK))
    return sum(Device.objects.filter(channel_id__in=chunk).update(last_seen_at=now, updated_at=now) for chunk in chunks)


@functools.cache
def _channels_refresh_sql(vendor: str) -> str:
    """PostgreSQL only: the ids go as one uuid[] parameter; the rows are locked in key order first, as a batch of
    channel opens locks them (a refresh and a batch naming the same machines would otherwise deadlock)."""
    column = rawsql.column
    written = ", ".join(f"{column(Device, name)} = %s" for name in ("last_seen_at", "updated_at"))
    locked, joined = rawsql.locked_in_key_order(Device, f"{column(Device, 'channel_id')} = ANY(%s::uuid[])")
    return f"UPDATE {rawsql.quote(Device._meta.db_table)} SET {written} FROM {locked} WHERE {joined}"


PRESENCE_CHUNK = 10_000  # channel ids per UPDATE on SQLite (a statement takes at most 65,535 parameters there)


# --- environments: at most one default per user (the partial unique constraint environment_one_default_per_user) --

DEFAULT_ENVIRONMENT_NAME = "default"


def _lock_user(user_id) -> None:
    """Serialise changes of a user's default environment (FOR NO KEY UPDATE: inserts of their rows still run)."""
    list(get_user_model().objects.filter(pk=user_id).select_for_update(no_key=True).values_list("pk"))


def _make_default(environment: Environment) -> None:
    Environment.objects.filter(user_id=environment.user_id, is_default=True).exclude(pk=environment.pk).update(
        is_default=False, updated_at=timezone.now()
    )
    environment.is_default = True
    environment.save(update_fields=["is_default", "updated_at"])


@transaction.atomic
def environment_create(*, user, name: str, is_default: bool = False) -> Environment:
    """Create an environment. The user's first one becomes their default, and so does one asked to be
    (`is_default`): the previous default then stops being it."""
    _lock_user(user.pk)
    first = not Environment.objects.filter(user=user).exists()
    environment = Environment.objects.create(user=user, name=name)
    if first or is_default:
        _make_default(environment)
    return environment


@transaction.atomic
def environment_set_default(*, environment: Environment) -> Outcome[Environment]:
    """Make `environment` its user's default; `changed=False` when it already was."""
    _lock_user(environment.user_id)
    environment.refresh_from_db()
    if environment.is_default:
        return Outcome(environment, False)
    _make_default(environment)
    return Outcome(environment, True)


@transaction.atomic
def environment_update(*, environment: Environment, is_default: bool | None = None, **fields) -> Environment:
    """Change `fields`; `is_default=True` makes it the default. The default cannot be unset directly (set another
    one instead), so a user with environments always has one."""
    if is_default is False and environment.is_default:
        raise InvalidInput({"isDefault": "The default environment stays so until another one is made the default."})
    for name, value in fields.items():
        setattr(environment, name, value)
    environment.save(update_fields=[*fields, "updated_at"])
    if is_default:
        environment_set_default(environment=environment)
    return environment


@transaction.atomic
def environment_delete(*, environment: Environment) -> Environment | None:
    """Delete `environment`. When it was the default, the user's oldest remaining environment becomes the default
    (returned), or none is left when it was their last."""
    _lock_user(environment.user_id)
    was_default = Environment.objects.filter(pk=environment.pk, is_default=True).exists()
    environment.delete()
    if not was_default:
        return None
    successor = Environment.objects.filter(user_id=environment.user_id).order_by("created_at", "id").first()
    if successor is not None:
        _make_default(successor)
    return successor


@transaction.atomic
def environment_default(*, user) -> Outcome[Environment]:
    """The user's default environment; a user without one gets a new one named "default" (`changed=True`)."""
    _lock_user(user.pk)
    environment = Environment.objects.filter(user=user, is_default=True).first()
    if environment is not None:
        return Outcome(environment, False)
    return Outcome(environment_create(user=user, name=DEFAULT_ENVIRONMENT_NAME, is_default=True), True)


@transaction.atomic
def device_delete(*, device: Device, now=None) -> int:
    """Delete `device` after revoking its keys (they stay listed, revoked). Returns how many it revoked.

    The device row is locked so a concurrent pairing exchange cannot mint it a key in between.
    """
    now = now or timezone.now()
    device = Device.objects.select_for_update().get(pk=device.pk)
    revoked = ApiToken.objects.filter(device=device, revoked_at__isnull=True).update(revoked_at=now)
    realtime.notify(realtime.machine_key(device.pk))  # its channel finds it gone and ends
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
