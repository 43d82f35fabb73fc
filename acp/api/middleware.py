"""Guards that run before any view, so bad input never reaches code that could answer 500."""

import json

from django.conf import settings
from django.core.exceptions import RequestDataTooBig

from acp.api.errors import error_json_response, is_api_path
from acp.api.throttling import rate_limit_headers
from acp.serving.hybrid import HybridMiddleware

BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class RequestGuardMiddleware(HybridMiddleware):
    """Refuse oversized bodies (413) and NUL characters in the path (404) or query string (400)."""

    def before(self, request):
        if "\x00" in request.path:
            return error_json_response(404, "Not found.", "not_found")
        if any("\x00" in key or "\x00" in value for key, values in request.GET.lists() for value in values):
            return error_json_response(400, "NUL characters are not allowed in the query string.", "invalid_request")
        if request.method in BODY_METHODS:
            return self._check_body(request)
        return None

    def _check_body(self, request):
        limit = settings.ACP_MAX_BODY_BYTES
        too_large = error_json_response(
            413, f"The request body exceeds {limit} bytes.", "payload_too_large", {"limit": limit}
        )
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return error_json_response(400, "Invalid Content-Length header.", "invalid_request")
        if declared > limit:
            return too_large
        try:
            body = request.body  # reads and caches the body; Django enforces the same limit
        except RequestDataTooBig:
            return too_large
        if len(body) > limit:
            return too_large
        return None


class RateLimitHeadersMiddleware(HybridMiddleware):
    """The `RateLimit-*` headers of the token's bucket (acp.api.throttling) on every response, 429 or not."""

    def after(self, request, response):
        for name, value in rate_limit_headers(request).items():
            response[name] = value
        return response


class ApiNotFoundMiddleware(HybridMiddleware):
    """Give unmatched API URLs (bad UUIDs included) the JSON error shape instead of an HTML page."""

    def after(self, request, response):
        if response.status_code in (404, 405) and is_api_path(request.path) and not _is_json(response):
            if response.status_code == 404:
                return error_json_response(404, "Not found.", "not_found")
            return error_json_response(405, f'Method "{request.method}" not allowed.', "method_not_allowed")
        return response


def _is_json(response) -> bool:
    if not response.get("Content-Type", "").startswith("application/json"):
        return False
    try:
        json.loads(response.content or b"null")
    except (ValueError, AttributeError):
        return False
    return True
