"""The ASGI application of the chosen serving mode (acp/asgi.py serves it)."""

import functools

from django.conf import settings
from django.core.handlers.asgi import ASGIHandler

from acp.serving import middleware, optimised
from acp.serving.collector import tune_garbage_collector
from acp.serving.cycles import release_request
from acp.serving.fast_streams import FastStreamRouter, fast_streams
from acp.serving.request_threads import PooledThreadsASGIHandler


class OptimisedASGIHandler(PooledThreadsASGIHandler):
    """Pooled request threads (acp/serving/request_threads.py), and each stock middleware listed in
    settings.MIDDLEWARE loaded as its inline subclass (acp/serving/middleware.py).

    Django's BaseHandler.load_middleware reads settings.MIDDLEWARE and nothing else, so the inline list is put in
    its place for that call only. It runs once, when the handler is built at import (acp/asgi.py), before anything
    else reads the setting; the setting itself keeps naming the stock classes, as Django's deploy checks require.
    """

    def load_middleware(self, is_async=False):
        listed = settings.MIDDLEWARE
        settings.MIDDLEWARE = middleware.inline(listed)
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = listed

    async def listen_for_disconnect(self, receive):
        """Django's, ending without an exception on the disconnect: `handle` ignores its RequestAborted anyway, and
        that exception, kept by the finished task with a traceback through `handle` (whose frame holds the task),
        made every request a reference cycle (uvicorn says "disconnect" as soon as the answer is sent)."""
        message = await receive()
        if message["type"] != "http.disconnect":
            raise AssertionError(f"Invalid ASGI message after request body: {message['type']}")  # as Django

    async def run_get_response(self, request):
        response = await super().run_get_response(request)
        # Closed once it is sent (not when the client went away meanwhile: the view may still be running then).
        response._resource_closers.append(functools.partial(release_request, request, response))
        return response


def asgi_application():
    """The optimised handler (behind the fast streams' router) with a tuned collector, or Django's own handler as
    `get_asgi_application()` builds it."""
    if not optimised():
        return ASGIHandler()
    application = FastStreamRouter(OptimisedASGIHandler(), fast_streams())
    tune_garbage_collector()
    return application
