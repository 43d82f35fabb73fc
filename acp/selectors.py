"""Reads of the registry: the token lookup on every request's path, and what retention and the dashboard see."""

from __future__ import annotations

import functools
from datetime import timedelta

from django.conf import settings
from django.db.models import Q

from acp.cleanup import Target
from acp.durations import parse_duration
from acp.models import ApiToken, Device, IdempotencyKey, User
from acp.serving import optimised, rawsql

RECENTLY_SEEN = timedelta(minutes=5)

_TOKEN_ROW = (ApiToken, User, Device)


def token_by_hash(key_hash: str) -> ApiToken | None:
    """The token with this hash, its user and device (or None) attached, in one query.

    Every request authenticates, and compiling this join cost Django ~0.75 ms of CPU per request (bench/run.py
    --profile: 16 % of a prepare), so it is written out (acp/serving/rawsql.py) unless ACP_SERVING=stock.
    """
    if not optimised():
        return ApiToken.objects.select_related("user", "device").filter(key_hash=key_hash).first()
    db = rawsql.database()
    found = rawsql.fetch_one(db, _TOKEN_ROW, _token_sql(db.vendor), [key_hash])
    if found is None:
        return None
    token, user, device = found
    token.user = user
    token.device = device
    return token


@functools.cache
def _token_sql(vendor: str) -> str:
    token, user, device = (rawsql.quote(model._meta.db_table) for model in _TOKEN_ROW)
    selected = ", ".join(rawsql.columns(model, rawsql.quote(model._meta.db_table)) for model in _TOKEN_ROW)
    return (
        f"SELECT {selected} FROM {token}"
        f" JOIN {user} ON {user}.{rawsql.column(User, 'id')} = {token}.{rawsql.column(ApiToken, 'user')}"
        f" LEFT JOIN {device} ON {device}.{rawsql.column(Device, 'id')} = {token}.{rawsql.column(ApiToken, 'device')}"
        f" WHERE {token}.{rawsql.column(ApiToken, 'key_hash')} = %s"
    )


# --- retention and the support dashboard (acp.composition) ----------------------------------------------------------


def retention_targets(*, cutoff, now, **options) -> list[Target]:
    """API tokens revoked, or expired, before `cutoff` (they authenticate nothing any more)."""
    idempotency_cutoff = now - parse_duration(settings.ACP_IDEMPOTENCY_TTL)
    return [
        Target("API tokens", ApiToken.objects.filter(Q(revoked_at__lt=cutoff) | Q(expires_at__lt=cutoff))),
        Target("idempotency keys", IdempotencyKey.objects.filter(created_at__lt=idempotency_cutoff)),
    ]


def dashboard_counts(*, now) -> dict[str, int]:
    return {"devices_seen_recently": Device.objects.filter(last_seen_at__gte=now - RECENTLY_SEEN).count()}
