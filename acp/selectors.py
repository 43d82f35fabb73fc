"""Reads of the registry that sit on every request's path."""

from __future__ import annotations

import functools
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from acp import rawsql
from acp.models import ApiToken, Device, PairingFailure, User

_TOKEN_ROW = (ApiToken, User, Device)


def token_by_hash(key_hash: str) -> ApiToken | None:
    """The token with this hash, its user and device (or None) attached, in one query.

    Every request authenticates, and compiling this join cost Django ~0.75 ms of CPU per request (bench/run.py
    --profile: 16 % of a prepare); see acp/rawsql.py.
    """
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


def pairing_retry_after(address: str, now=None) -> int | None:
    """Seconds until `address` may try another pairing exchange, or None while under the failure limit."""
    now = now or timezone.now()
    window = timedelta(seconds=settings.ACP_PAIRING_FAILURE_WINDOW)
    recent = PairingFailure.objects.filter(address=address, created_at__gte=now - window)
    limit = settings.ACP_PAIRING_FAILURE_LIMIT
    times = list(recent.order_by("-created_at").values_list("created_at", flat=True)[:limit])
    if len(times) < limit:
        return None
    return max(1, int((times[-1] + window - now).total_seconds()) + 1)
