"""Reads of the registry: the token lookup on every request's path, and what retention and the dashboard see."""

from __future__ import annotations

import functools
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from acp.cleanup import Target
from acp.durations import parse_duration
from acp.models import ApiToken, Device, IdempotencyKey, PairingFailure, PairingToken, User
from acp.serving import optimised, rawsql

RECENTLY_SEEN = timedelta(minutes=5)

_TOKEN_ROW = (ApiToken, User, Device)


def token_by_hash(key_hash: str) -> ApiToken | None:
    """The token with this hash, its user and device (or None) attached, in one query."""
    return tokens_by_hash([key_hash]).get(key_hash)


def tokens_by_hash(key_hashes) -> dict[str, ApiToken]:
    """The tokens with these hashes (by hash), their users and devices (or None) attached, in one query: one
    request's token, or those of the channel connects a process takes in together (acp/serving/fast_streams.py).

    Every request authenticates, and compiling this join cost Django ~0.75 ms of CPU per request (bench/run.py
    --profile: 16 % of a prepare), so it is written out (acp/serving/rawsql.py) unless ACP_SERVING=stock.
    """
    key_hashes = sorted(set(key_hashes))
    if not key_hashes:
        return {}
    if not optimised():
        found = ApiToken.objects.select_related("user", "device").filter(key_hash__in=key_hashes)
        return {token.key_hash: token for token in found}
    db = rawsql.database()
    tokens = {}
    for token, user, device in rawsql.fetch_all(db, _TOKEN_ROW, _tokens_sql(db.vendor, len(key_hashes)), key_hashes):
        token.user = user
        token.device = device
        tokens[token.key_hash] = token
    return tokens


@functools.lru_cache(maxsize=64)  # one per number of hashes: a request's one, a batch of connects' up to its size
def _tokens_sql(vendor: str, count: int) -> str:
    token, user, device = (rawsql.quote(model._meta.db_table) for model in _TOKEN_ROW)
    selected = ", ".join(rawsql.columns(model, rawsql.quote(model._meta.db_table)) for model in _TOKEN_ROW)
    key_hash = f"{token}.{rawsql.column(ApiToken, 'key_hash')}"
    return (
        f"SELECT {selected} FROM {token}"
        f" JOIN {user} ON {user}.{rawsql.column(User, 'id')} = {token}.{rawsql.column(ApiToken, 'user')}"
        f" LEFT JOIN {device} ON {device}.{rawsql.column(Device, 'id')} = {token}.{rawsql.column(ApiToken, 'device')}"
        f" WHERE {key_hash} {rawsql.equal_to_one_of(count)}"
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


# --- retention and the support dashboard (acp.composition) ----------------------------------------------------------


def retention_targets(*, cutoff, now, **options) -> list[Target]:
    """API tokens revoked or expired, and pairing tokens expired, before `cutoff` (they authenticate nothing any
    more); idempotency keys older than ACP_IDEMPOTENCY_TTL."""
    idempotency_cutoff = now - parse_duration(settings.ACP_IDEMPOTENCY_TTL)
    return [
        Target("API tokens", ApiToken.objects.filter(Q(revoked_at__lt=cutoff) | Q(expires_at__lt=cutoff))),
        Target("pairing tokens", PairingToken.objects.filter(expires_at__lt=cutoff)),
        Target("idempotency keys", IdempotencyKey.objects.filter(created_at__lt=idempotency_cutoff)),
    ]


def dashboard_counts(*, now) -> dict[str, int]:
    return {"devices_seen_recently": Device.objects.filter(last_seen_at__gte=now - RECENTLY_SEEN).count()}
