"""Guards that run before any view, so bad input never reaches code that could answer 500."""

import json

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.exceptions import RequestDataTooBig
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.middleware.security import SecurityMiddleware
from whitenoise.middleware import WhiteNoiseMiddleware

from acp.api.errors import error_json_response, is_api_path
from acp.api.throttling import rate_limit_headers

BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class HybridMiddleware:
    """Middleware that runs in the server's own mode. Under ASGI a sync-only middleware would park every
    request on a thread until the (async) view returns: a long-poll would hold a thread while it waits.

    Subclasses implement `before(request)` (a response to answer early, or None) and `after(request, response)`.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self._is_async = iscoroutinefunction(get_response)
        if self._is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self._is_async:
            return self._acall(request)
        early = self.before(request)
        if early is not None:
            return early
        return self.after(request, self.get_response(request))

    async def _acall(self, request):
        early = self.before(request)
        if early is not None:
            return early
        return self.after(request, await self.get_response(request))

    def before(self, request):
        return None

    def after(self, request, response):
        return response


class StaticFilesMiddleware(HybridMiddleware, WhiteNoiseMiddleware):
    """WhiteNoise (admin and Swagger UI assets), without its sync-only call path."""

    def __init__(self, get_response):
        WhiteNoiseMiddleware.__init__(self, get_response)
        HybridMiddleware.__init__(self, get_response)

    def before(self, request):
        static_file = self.find_file(request.path_info) if self.autorefresh else self.files.get(request.path_info)
        return self.serve(static_file, request) if static_file is not None else None


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


class InlineHooks:
    """Run a Django middleware's hooks in the event loop instead of a worker thread each.

    Under ASGI, Django's `MiddlewareMixin` runs every `process_request`, `process_view` and `process_response`
    through `sync_to_async`: with the stock middleware that is about a dozen thread hops per request, the largest
    cost of a cheap request after the ORM (bench/run.py --profile). These hooks only read the request and set
    headers, cookies and lazy attributes; where one may reach the database (a session to save), the subclass says
    so in `response_needs_thread` and that call still runs in the request's thread. In sync mode (WSGI, the test
    client) nothing changes.
    """

    async def __acall__(self, request):
        response = self.process_request(request) if hasattr(self, "process_request") else None
        response = response or await self.get_response(request)
        if not hasattr(self, "process_response"):
            return response
        if self.response_needs_thread(request):
            return await sync_to_async(self.process_response, thread_sensitive=True)(request, response)
        return self.process_response(request, response)

    def response_needs_thread(self, request) -> bool:
        return False


class InlineSecurityMiddleware(InlineHooks, SecurityMiddleware):
    pass


class InlineCommonMiddleware(InlineHooks, CommonMiddleware):
    pass


class InlineXFrameOptionsMiddleware(InlineHooks, XFrameOptionsMiddleware):
    pass


class InlineAuthenticationMiddleware(InlineHooks, AuthenticationMiddleware):
    """Sets the lazy `request.user`; the user is read from the session only when a view asks, in its thread."""


class InlineSessionMiddleware(InlineHooks, SessionMiddleware):
    """A session that was read may have to be saved (the database): only then is the response hook threaded."""

    def response_needs_thread(self, request) -> bool:
        return request.session.accessed


class InlineMessageMiddleware(InlineHooks, MessageMiddleware):
    """Storing messages may read the session (the database): only then is the response hook threaded."""

    def response_needs_thread(self, request) -> bool:
        storage = getattr(request, "_messages", None)
        return storage is not None and (storage.used or storage.added_new)


class InlineCsrfViewMiddleware(InlineHooks, CsrfViewMiddleware):
    """Its view hook runs in the event loop too: it reads headers, cookies and an already-read body."""

    async def process_view(self, request, callback, callback_args, callback_kwargs):
        return super().process_view(request, callback, callback_args, callback_kwargs)
