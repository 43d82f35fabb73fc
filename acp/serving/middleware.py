"""Django's stock middleware (and WhiteNoise's) with hooks that run in the event loop under ASGI.

`settings.MIDDLEWARE` lists the stock classes, in both serving modes, so Django's deploy checks (which look for
their dotted paths: security.W001, W002, W003) see the protections. The optimised ASGI handler loads, in place of
each, its subclass below (`INLINE`; see `acp.serving.handler.OptimisedASGIHandler.load_middleware`): the same
checks and headers, only without a thread hop per hook. Subclassing alone would not satisfy the checks, which
compare the paths as strings. In sync mode (WSGI, the test client) the subclasses behave exactly as the stock
classes, so the swap is made only where it changes something: in the optimised ASGI handler.
"""

from asgiref.sync import sync_to_async
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.middleware.security import SecurityMiddleware
from whitenoise.middleware import WhiteNoiseMiddleware

from acp.serving.hybrid import HybridMiddleware


class StaticFilesMiddleware(HybridMiddleware, WhiteNoiseMiddleware):
    """WhiteNoise (admin and Swagger UI assets), without its sync-only call path."""

    def __init__(self, get_response):
        WhiteNoiseMiddleware.__init__(self, get_response)
        HybridMiddleware.__init__(self, get_response)

    def before(self, request):
        static_file = self.find_file(request.path_info) if self.autorefresh else self.files.get(request.path_info)
        return self.serve(static_file, request) if static_file is not None else None


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


def _dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# The stock class listed in settings.MIDDLEWARE -> the class the optimised ASGI handler loads instead.
INLINE = {
    _dotted(stock): _dotted(inline)
    for stock, inline in (
        (SecurityMiddleware, InlineSecurityMiddleware),
        (WhiteNoiseMiddleware, StaticFilesMiddleware),
        (SessionMiddleware, InlineSessionMiddleware),
        (CommonMiddleware, InlineCommonMiddleware),
        (CsrfViewMiddleware, InlineCsrfViewMiddleware),
        (AuthenticationMiddleware, InlineAuthenticationMiddleware),
        (MessageMiddleware, InlineMessageMiddleware),
        (XFrameOptionsMiddleware, InlineXFrameOptionsMiddleware),
    )
}


def inline(paths: list[str]) -> list[str]:
    """`paths` (settings.MIDDLEWARE) with each stock class replaced by its inline subclass."""
    return [INLINE.get(path, path) for path in paths]
