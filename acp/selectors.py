"""Reads of the registry that sit on every request's path."""

from __future__ import annotations

import functools

from acp.models import ApiToken, Device, User
from acp.serving import optimised, rawsql

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
