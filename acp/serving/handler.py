"""The ASGI application of the chosen serving mode (acp/asgi.py serves it)."""

import functools
import gc

from django.conf import settings
from django.core.handlers.asgi import ASGIHandler

from acp.serving import middleware, optimised
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


def tune_garbage_collector() -> None:
    """Keep the cyclic garbage collector's full passes rare and short in a process holding thousands of waiters.

    Every waiting long-poll keeps its objects alive (≈ 50 KB each), and the objects of each request in flight are
    promoted to the oldest generation whenever a young collection meets them, so with CPython's defaults a full
    collection ran every ~12 s and, with 5,000 waiters, stopped the process for 1.2 s (bench/run.py idle-polls).
    Freezing what the import made (Django, the URL conf, the models) takes it out of every pass. The young
    generation is collected every 10,000 allocations instead of 700, which promotes far fewer short-lived request
    objects, and not less often: a young pass walks all it holds, and at 50,000 those passes held a worker with
    10,000 machine channels for tens of milliseconds each (a command's create→event p99 173 ms there, 62 ms at
    10,000; bench/channel.py). The oldest generation waits for 100 middle passes instead of 20, so full passes
    stay as rare as they were at 50,000 (with 5,000 long-polls held, 20 made the prepares' p99 twice as long).
    """
    gc.freeze()
    gc.set_threshold(10_000, 20, 100)


def asgi_application():
    """The optimised handler (behind the fast streams' router) with a tuned collector, or Django's own handler as
    `get_asgi_application()` builds it."""
    if not optimised():
        return ASGIHandler()
    application = FastStreamRouter(OptimisedASGIHandler(), fast_streams())
    tune_garbage_collector()
    return application
