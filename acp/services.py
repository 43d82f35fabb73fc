"""Writes and state changes of the registry: tokens and devices."""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from acp.domain import InvalidInput, Outcome
from acp.models import ApiToken, Device, Environment

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
