"""What every service says back: one family of domain errors, and one result type for "what happened".

Services raise these and never speak HTTP; `acp.api.errors.exception_handler` is the one place that turns each
kind into a status and the documented error shape (an error that carries `obj` gets the row as it stands in
`details`, serialized by the view that was asked).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class DomainError(Exception):
    """A service refused. `message` is for people; `obj`, when set, is the row as it stands."""

    def __init__(self, message: str, *, obj: Any = None):
        super().__init__(message)
        self.message = message
        self.obj = obj


class NotFound(DomainError):
    """The row does not exist, or is not the caller's (the two read the same)."""

    def __init__(self, message: str = "Not found."):
        super().__init__(message)


class InvalidInput(DomainError):
    """Values the service cannot accept (out of order, in the future, missing); `errors` maps field → message."""

    def __init__(self, errors: dict[str, str]):
        super().__init__(next(iter(errors.values())))
        self.errors = errors


class Conflict(DomainError):
    """The request does not fit the current state of `obj` (a signature naming other content, an ended session)."""

    def __init__(self, obj: Any, message: str):
        super().__init__(message, obj=obj)


class InvalidTransition(Conflict):
    """That move is not allowed from the state `obj` is in."""


class Unauthenticated(DomainError):
    """A credential in the body (not the bearer token) is unknown: a pairing token that never existed."""


class Gone(DomainError):
    """The object existed but can no longer be used or shown (an expired or revoked pairing token, a key's secret)."""


class IdempotencyKeyReused(DomainError):
    """The Idempotency-Key was first used with a different request."""


class IdempotencyKeyInFlight(DomainError):
    """The first request with this Idempotency-Key has not finished yet."""


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What a state-changing call did: the row as it now stands, and whether anything was written
    (`changed=False`: it already was so — a repeat, an existing prepared session, the same acknowledgement)."""

    obj: T
    changed: bool
