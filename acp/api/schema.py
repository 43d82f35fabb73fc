"""OpenAPI generation: envelopes and the error shape documented on every operation."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse

from acp.api import idempotency
from acp.api.serializers import ErrorSerializer, Serializer

_ENVELOPES: dict[tuple[str, type], type] = {}

_ERROR_DESCRIPTIONS = {
    "400": "Invalid request: malformed JSON, wrong types, NUL characters; field errors in `details`.",
    "401": "Missing, unknown, expired or revoked API key (`Authorization: Bearer` or `X-API-Key`).",
    "403": "The key may not do this (a read-only key writing, a device key outside daemon work).",
    "404": "No such object, or not the caller's.",
    "413": "The body or the plan is over the size limit.",
    "415": "The body is not `application/json`.",
    "409": "A request with this Idempotency-Key is still in progress (`idempotency_key_in_flight`).",
    "422": "The Idempotency-Key was used with a different request (`idempotency_key_reused`).",
    "429": "The token's rate-limit bucket is spent (see the README, Rate limits); retry after `Retry-After` seconds.",
    "503": "`service_unavailable`: the database cannot be reached; retry after `Retry-After` seconds.",
}
_RATE_LIMIT_HEADERS = {
    "Retry-After": "Seconds until the bucket's window ends.",
    "RateLimit-Limit": "The bucket's budget per window (also `X-RateLimit-Limit`; on every counted response).",
    "RateLimit-Remaining": "Requests left in the window (also `X-RateLimit-Remaining`).",
    "RateLimit-Reset": "Seconds until the window ends (`X-RateLimit-Reset`: the same moment in Unix seconds).",
}
_BODY_METHODS = {"POST", "PUT", "PATCH"}

# The docs group operations by resource, not by URL prefix: (path prefix, tag, one object), the longest prefix first.
RESOURCES = [
    ("/v1/workspace-bindings/{bindingId}/push-sessions", "push sessions", "push session"),
    ("/v1/workspace-bindings/{bindingId}/pull-sessions", "pull sessions", "pull session"),
    ("/v1/workspace-bindings", "bindings", "workspace binding"),
    ("/v1/threads/{threadId}/local-sessions/{localSessionId}/control", "control commands", "control command"),
    ("/v1/threads/{threadId}/local-sessions", "local sessions", "local session"),
    ("/v1/threads/{threadId}/events", "thread events", "thread event"),
    ("/v1/threads", "threads", "thread"),
    ("/v1/devices", "devices", "device"),
    ("/v1/projects", "projects", "project"),
    ("/v1/environments", "environments", "environment"),
    ("/v1/local-runner-pairing-tokens", "pairing tokens", "pairing token"),
    ("/v1/api-keys", "API keys", "API key"),
    ("/api/v1/workspaces/{workspace_id}/sessions", "launches", "launch"),
    ("/api/v1/workspaces", "workspaces", "workspace"),
    ("/api/v1/machines", "machines", "machine"),
]
_SUMMARIES = {
    "list": "List {plural}",
    "create": "Create {a} {one}",
    "retrieve": "Get {a} {one}",
    "partial_update": "Update {a} {one}",
    "destroy": "Delete {a} {one}",
    "revoke": "Revoke {a} {one}",
}


def resource_of(path: str) -> tuple[str, str] | None:
    """(tag, one object) of the resource an API path belongs to."""
    for prefix, tag, one in RESOURCES:
        if path == prefix or path.startswith(prefix + "/"):
            return tag, one
    return None


def envelope_serializer(key: str, serializer_class) -> type:
    """A serializer class `{key: <serializer_class>}`, one per pair, for the `/v1` single-object wrapper."""
    if not isinstance(serializer_class, type):
        serializer_class = type(serializer_class)
    cache_key = (key, serializer_class)
    if cache_key not in _ENVELOPES:
        name = serializer_class.__name__.removesuffix("Serializer") + "Envelope"
        _ENVELOPES[cache_key] = type(name, (Serializer,), {key: serializer_class(read_only=True)})
    return _ENVELOPES[cache_key]


class AcpAutoSchema(AutoSchema):
    def get_override_parameters(self):
        parameters = super().get_override_parameters()
        if self._is_idempotent():
            parameters = [*parameters, idempotency.PARAMETER]
        return parameters

    def _is_idempotent(self) -> bool:
        action = getattr(self.view, "action", None) or self.method.lower()
        return getattr(getattr(self.view, action, None), "idempotent", False)

    def get_tags(self):
        resource = resource_of(self.path)
        return [resource[0]] if resource else super().get_tags()

    def get_summary(self):
        summary = super().get_summary()
        resource = resource_of(self.path)
        action = getattr(self.view, "action", None)
        if summary or resource is None or action not in _SUMMARIES:
            return summary
        _, one = resource
        plural = one + ("es" if one.endswith("ch") else "s")
        return _SUMMARIES[action].format(plural=plural, one=one, a="an" if one[0] in "aeiou" else "a")

    def get_operation(self, *args, **kwargs):
        operation = super().get_operation(*args, **kwargs)
        if operation is not None and not self.view.get_authenticators():
            operation["security"] = []  # public (the pairing exchange: its body carries the credential)
        return operation

    def get_response_serializers(self):
        serializer = super().get_response_serializers()
        key = getattr(self.view, "envelope_key", None)
        if key and serializer is not None and not self._is_list_view(serializer):
            return envelope_serializer(key, serializer)
        return serializer

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for code in self._error_codes():
            responses.setdefault(
                code, self._get_response_for_code(OpenApiResponse(ErrorSerializer, _ERROR_DESCRIPTIONS[code]), code)
            )
        if "429" in responses:
            responses["429"]["headers"] = {
                name: {"schema": {"type": "integer"}, "description": text} for name, text in _RATE_LIMIT_HEADERS.items()
            }
        return responses

    def _error_codes(self) -> list[str]:
        codes = ["400"]
        authenticated = bool(self.view.get_authenticators())
        if authenticated:
            codes += ["401", "403", "429"]
        if "{" in self.path or authenticated:
            codes.append("404")
        if self.method in _BODY_METHODS:
            codes += ["413", "415"]
        if self._is_idempotent():
            codes += ["409", "422"]
        return [*codes, "503"]


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """Either header carries the key: `Authorization: Bearer acp_…` or `X-API-Key: acp_…`."""

    target_class = "acp.api.authentication.BearerTokenAuthentication"
    name = ["bearerAuth", "apiKeyAuth"]

    def get_security_requirement(self, auto_schema):
        return None  # SPECTACULAR_SETTINGS["SECURITY"] lists the two as alternatives

    def get_security_definition(self, auto_schema):
        return [
            {"type": "http", "scheme": "bearer", "description": "An `acp_…` user or device key."},
            {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "The same key, in its own header."},
        ]
