"""Idempotency keys: the first answer to a create, replayed to every repeat of it (per user).

`idempotency_key_claim` is called inside the transaction that does the work, so a concurrent duplicate waits on
the unique index until the first commits, then replays its answer. A first request whose answer comes only after
its transaction (a launch waiting for its daemon) commits its claim unanswered: until it answers, duplicates are
refused as in flight. Keys live `ACP_IDEMPOTENCY_TTL`; an unanswered claim whose request died is released after
`ACP_IDEMPOTENCY_IN_FLIGHT_TIMEOUT`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from acp.domain import IdempotencyKeyInFlight, IdempotencyKeyReused
from acp.durations import parse_duration
from acp.models import IdempotencyKey


@dataclass(frozen=True)
class Claim:
    """A claimed key: `replay` holds the first answer's (status, JSON text) when this request is a repeat."""

    record: IdempotencyKey
    replay: tuple[int, str] | None


def request_fingerprint(*, method: str, path: str, body) -> str:
    """What a key stands for: the method, the path and the parsed body (so key order and spacing don't matter)."""
    document = json.dumps({"method": method, "path": path, "body": body}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(document.encode()).hexdigest()


def idempotency_key_claim(*, user, key: str, fingerprint: str, now=None) -> Claim:
    """Claim (`user`, `key`) for this request, or get the first answer to replay.

    Raises `IdempotencyKeyReused` when the key was used with another request, `IdempotencyKeyInFlight` while
    the first request has not answered yet. Keys older than `ACP_IDEMPOTENCY_TTL`, and unanswered claims older
    than `ACP_IDEMPOTENCY_IN_FLIGHT_TIMEOUT`, are taken over as new.
    """
    now = now or timezone.now()
    record, created = IdempotencyKey.objects.select_for_update().get_or_create(
        user=user, key=key, defaults={"request_fingerprint": fingerprint, "created_at": now}
    )
    if created:
        return Claim(record, None)
    if _expired(record, now):
        record.request_fingerprint = fingerprint
        record.response_status = record.resource_id = None
        record.response_body = ""
        record.created_at = now
        record.save()
        return Claim(record, None)
    if record.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused("This Idempotency-Key was already used with a different request.")
    if record.response_status is None:
        raise IdempotencyKeyInFlight("A request with this Idempotency-Key is still in progress; retry later.")
    return Claim(record, (record.response_status, record.response_body))


def _expired(record: IdempotencyKey, now) -> bool:
    if record.response_status is None:
        return record.created_at < now - timedelta(seconds=settings.ACP_IDEMPOTENCY_IN_FLIGHT_TIMEOUT)
    return record.created_at < now - parse_duration(settings.ACP_IDEMPOTENCY_TTL)


def idempotency_key_store(*, record: IdempotencyKey, status: int, body: str, resource_id=None) -> IdempotencyKey:
    """Remember the answer given to the first request with this key (its JSON as sent, and what it created)."""
    record.response_status = status
    record.response_body = body
    record.resource_id = resource_id
    record.save(update_fields=["response_status", "response_body", "resource_id", "updated_at"])
    return record


@transaction.atomic
def idempotency_key_release(*, record: IdempotencyKey) -> None:
    """Forget an unanswered claim (its request failed before it had an answer worth replaying)."""
    IdempotencyKey.objects.filter(pk=record.pk, response_status__isnull=True).delete()
