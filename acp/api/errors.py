"""One error shape for both API families: {"error": str, "code": str, "details": {}}."""

import logging
import re
import sys

from django.apps import apps
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, InterfaceError, OperationalError
from django.db.models import ProtectedError, RestrictedError
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response

from acp import domain, references

logger = logging.getLogger(__name__)


class ApiError(exceptions.APIException):
    """A domain error with a machine code; `details` goes to the client as is."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_request"
    default_detail = "Invalid request."

    def __init__(self, message=None, *, code=None, details=None, status_code=None):
        super().__init__(message or self.default_detail, code or self.default_code)
        self.error_code = code or self.default_code
        self.details = details or {}
        if status_code is not None:
            self.status_code = status_code


class Conflict(ApiError):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    default_detail = "The request conflicts with the current state."


class StateTransitionConflict(Conflict):
    default_code = "state_transition_conflict"
    default_detail = "That state transition is not allowed."


class PayloadTooLarge(ApiError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"
    default_detail = "The request body is too large."


class ServiceUnavailable(ApiError):
    """The database cannot be reached (down, restarting, out of connections): the client should retry."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "service_unavailable"
    default_detail = "The service is temporarily unavailable; retry shortly."
    wait = 5  # seconds, sent as Retry-After: about what a database restart or failover takes


def is_database_outage(exc: BaseException | None) -> bool:
    return isinstance(exc, OperationalError | InterfaceError)


# DRF exception class -> (machine code, fixed message or None to keep DRF's).
_CODES = [
    (exceptions.ValidationError, "invalid_request", "Invalid request."),
    (exceptions.ParseError, "invalid_request", None),
    (exceptions.NotAuthenticated, "unauthorized", "Authentication credentials were not provided."),
    (exceptions.AuthenticationFailed, "unauthorized", None),
    (exceptions.NotFound, "not_found", "Not found."),
    (exceptions.PermissionDenied, "forbidden", None),
    (exceptions.MethodNotAllowed, "method_not_allowed", None),
    (exceptions.NotAcceptable, "not_acceptable", None),
    (exceptions.UnsupportedMediaType, "unsupported_media_type", None),
    (exceptions.Throttled, "rate_limited", None),
]


def error_body(message: str, code: str, details=None) -> dict:
    return {"error": message, "code": code, "details": details or {}}


def error_json_response(status_code: int, message: str, code: str, details=None) -> JsonResponse:
    """The error shape for places outside DRF (middleware, URL-level 404)."""
    return JsonResponse(error_body(message, code, details), status=status_code)


# Domain error class -> (status, machine code); the first match wins, so subclasses come first.
_DOMAIN_ERRORS = [
    (domain.InvalidTransition, status.HTTP_409_CONFLICT, "state_transition_conflict"),
    (domain.Conflict, status.HTTP_409_CONFLICT, "conflict"),
    (domain.IdempotencyKeyInFlight, status.HTTP_409_CONFLICT, "idempotency_key_in_flight"),
    (domain.IdempotencyKeyReused, status.HTTP_422_UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
    (domain.InvalidInput, status.HTTP_400_BAD_REQUEST, "invalid_request"),
    (domain.NotFound, status.HTTP_404_NOT_FOUND, "not_found"),
    (domain.Unauthenticated, status.HTTP_401_UNAUTHORIZED, "unauthorized"),
    (domain.Gone, status.HTTP_410_GONE, "gone"),
]


def domain_error_to_api_error(exc: domain.DomainError, view=None) -> ApiError:
    """The HTTP form of a service's refusal; the row it names is described by the view that was asked."""
    status_code, code = next((status, code) for cls, status, code in _DOMAIN_ERRORS if isinstance(exc, cls))
    if isinstance(exc, domain.InvalidInput):
        details = {field: [message] for field, message in exc.errors.items()}
    elif exc.obj is not None and view is not None and hasattr(view, "describe"):
        details = view.describe(exc.obj)
    else:
        details = {}
    return ApiError(exc.message, code=code, details=details, status_code=status_code)


def exception_handler(exc, context):
    if isinstance(exc, domain.DomainError):
        exc = domain_error_to_api_error(exc, context.get("view"))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, ProtectedError | RestrictedError):
        exc = ApiError("Other objects still refer to this one.", code="conflict", status_code=409)
    elif references.is_foreign_key_violation(exc):
        exc = foreign_key_conflict(exc, context.get("view"))
    elif references.is_deadlock(exc):  # an OperationalError, but the database is up: tell the client to retry
        exc = ApiError(
            "Another request changed the same rows at the same time; try again.", code="conflict", status_code=409
        )
    elif is_database_outage(exc):
        logger.warning("database unavailable: %s", exc)
        exc = ServiceUnavailable()
    if not isinstance(exc, exceptions.APIException):
        return None  # a real bug: let Django log it and answer 500

    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))

    if isinstance(exc, ApiError):
        body = error_body(str(exc.detail), exc.error_code, exc.details)
    else:
        body = _drf_error_body(exc)
    return Response(body, status=exc.status_code, headers=headers)


_FK_MISSING = re.compile(r"Key \((?P<column>\w+)\)=\(.*\) is not present in table")


def foreign_key_conflict(exc: IntegrityError, view=None) -> ApiError:
    """A write and a delete crossed (the backstop behind `acp.references`): 409, naming the request's field
    whose row went away when the database says which."""
    diag = getattr(exc.__cause__, "diag", None)
    match = _FK_MISSING.search(getattr(diag, "message_detail", None) or "")
    if match is None:
        return ApiError("Another request changed what this one refers to; try again.", code="conflict", status_code=409)
    field = _api_field_name(diag.table_name, match["column"], view)
    return ApiError(
        f"{field} refers to an object that was deleted meanwhile.",
        code="conflict",
        details={field: ["The object was deleted while this request ran."]},
        status_code=409,
    )


def _api_field_name(table: str, column: str, view) -> str:
    """The request field behind `table.column`: the view's serializer field with that source, else the model's."""
    model = next((m for m in apps.get_models() if m._meta.db_table == table), None)
    field = next((f for f in model._meta.concrete_fields if f.column == column), None) if model else None
    if field is None:
        return column
    serializer_class = getattr(view, "serializer_class", None)
    if serializer_class is not None:
        for name, serializer_field in serializer_class().fields.items():
            if serializer_field.source in (field.name, field.attname):
                return name
    return field.name


def _drf_error_body(exc: exceptions.APIException) -> dict:
    code, message = next(
        ((code, message) for exc_class, code, message in _CODES if isinstance(exc, exc_class)), ("error", None)
    )
    if isinstance(exc, exceptions.ValidationError):
        details = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        return error_body(_first_message(details) or message, code, details)
    return error_body(message or str(exc.detail), code)


def _first_message(details) -> str | None:
    """A readable one-line summary of a field-error tree, e.g. "plan: This field is required."."""
    for field, errors in details.items():
        while isinstance(errors, dict) and errors:
            field, errors = next(iter(errors.items()))
        if isinstance(errors, list) and errors:
            first = errors[0]
            if isinstance(first, dict):
                return _first_message(first)
            return f"{field}: {first}"
    return None


API_PREFIXES = ("/v1/", "/api/v1/")


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES)


def api_404_view(request, exception=None):
    if is_api_path(request.path):
        return error_json_response(404, "Not found.", "not_found")
    return defaults.page_not_found(request, exception)


def api_500_view(request):
    # Called while the exception is handled: a database outage outside DRF (middleware, plain views) is a 503 too.
    if is_database_outage(sys.exc_info()[1]):
        return service_unavailable_response()
    return error_json_response(500, "Internal server error.", "server_error")


def service_unavailable_response() -> JsonResponse:
    unavailable = ServiceUnavailable()
    response = error_json_response(unavailable.status_code, str(unavailable.detail), unavailable.error_code)
    response["Retry-After"] = str(unavailable.wait)
    return response
