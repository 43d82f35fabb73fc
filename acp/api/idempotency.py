"""`Idempotency-Key` for create endpoints: `@idempotent` on the view method, `acp.idempotency` underneath.

A request with the header claims the key in the transaction that does the work: its answer is stored and
replayed (same status and body, `Idempotent-Replayed: true`) to every repeat with the same method, path and
body; another body → 422; a refusal of the current state (409) is an answer the key stands for too. Invalid
input and 404s roll the claim back with the work, so they do not spend the key.
"""

import functools

from django.db import transaction
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework.renderers import JSONRenderer

from acp.api.errors import ApiError
from acp.domain import Conflict
from acp.idempotency import (
    Claim,
    idempotency_key_claim,
    idempotency_key_release,
    idempotency_key_store,
    request_fingerprint,
)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
REPLAYED_HEADER = "Idempotent-Replayed"

PARAMETER = OpenApiParameter(
    HEADER,
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description=(
        f"Up to {MAX_KEY_LENGTH} characters, per user: a repeat with the same body replays the first answer "
        "(`Idempotent-Replayed: true`); another body → 422; while the first is still in progress → 409."
    ),
)


def idempotent(view_method):
    """Make a DRF view method (one that creates) honour `Idempotency-Key`. The schema documents it (acp.api.schema)."""

    @functools.wraps(view_method)
    def wrapper(view, request, *args, **kwargs):
        key = _key(request)
        if key is None:
            return view_method(view, request, *args, **kwargs)
        fingerprint = request_fingerprint(method=request.method, path=request.path, body=request.data)
        with transaction.atomic():
            claim = idempotency_key_claim(user=request.user, key=key, fingerprint=fingerprint)
            if claim.replay is not None:
                return _replay(*claim.replay)
            try:
                response = view_method(view, request, *args, **kwargs)
            except Conflict as exc:
                response = view.handle_exception(exc)
            _remember(view, claim, response)
        return response

    wrapper.idempotent = True
    return wrapper


def _replay(status: int, body: str) -> HttpResponse:
    return HttpResponse(body, status=status, content_type="application/json", headers={REPLAYED_HEADER: "true"})


def _remember(view, claim: Claim, response) -> None:
    """Store the answer now, or, for an answer that comes after the transaction (a long-poll), when it comes."""
    long_poll = getattr(response, "long_poll", None)
    if long_poll is None:
        body = JSONRenderer().render(response.data).decode()  # what DRF sends: a replay is byte for byte the same
        created_id = _created_id(view, response)
        idempotency_key_store(record=claim.record, status=response.status_code, body=body, resource_id=created_id)
        return
    record = claim.record

    def store_answer(status, body):
        if status >= 500 and status != 504:
            idempotency_key_release(record=record)
        else:
            idempotency_key_store(record=record, status=status, body=body)

    long_poll.on_answer = store_answer


def _created_id(view, response):
    if response.status_code >= 300 or not isinstance(response.data, dict):
        return None
    data = response.data.get(view.envelope_key) if getattr(view, "envelope_key", None) else response.data
    return data.get("id") if isinstance(data, dict) else None


def _key(request) -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not key or len(key) > MAX_KEY_LENGTH or "\x00" in key:
        raise ApiError(
            f"{HEADER} must be 1–{MAX_KEY_LENGTH} characters, without NUL.",
            details={HEADER: ["Invalid idempotency key."]},
        )
    return key
