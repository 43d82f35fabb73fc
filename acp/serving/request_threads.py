"""The threads that run requests' synchronous code under ASGI: a small pool, lent one per request.

Django's ASGI handler gives each request a one-thread executor (asgiref's ThreadSensitiveContext), so that
everything synchronous the request does (signal receivers, the view, the ORM) runs on one thread, the one that
holds its database connection. Stock, that executor starts a thread per request, and a second one at the end to
join it; under load a process then runs as many threads as requests in flight, and CPython hands the GIL around
all of them. Here a request borrows one of `ACP_REQUEST_THREADS` executors (waiting for one if all are lent) and
gives it back when it ends: on this project's machine an authenticated request costs ~1 ms less CPU, and several
times less than that at 32 requests in flight. A long-poll gives its thread back for the time it waits
(`released_request_thread`), so waiting requests hold no thread and never starve the others.

No request waits for another while holding a thread (the ORM's transactions run inside one synchronous call), so
a small pool cannot deadlock; a thread blocked on a row lock only makes the next request wait for another one.

It relies on asgiref internals (`SyncToAsync.context_to_thread_executor`, `SyncToAsync.thread_sensitive_context`):
pyproject.toml pins asgiref's minor series, and tests/acp/test_request_threads.py fails if they change. With
`ACP_SERVING=stock` none of this runs (Django's own ASGIHandler, and `released_request_thread` does nothing).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import SyncToAsync, ThreadSensitiveContext
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler

from acp.serving import optimised


class RequestThreadPool:
    """`size` one-thread executors, lent to requests in arrival order. Used from the event loop's thread only."""

    def __init__(self, size: int):
        self._executors = [ThreadPoolExecutor(max_workers=1, thread_name_prefix="acp-request") for _ in range(size)]
        self._idle = collections.deque(self._executors)
        self._waiters: collections.deque[asyncio.Future] = collections.deque()

    async def lend(self) -> ThreadPoolExecutor:
        if self._idle and not self._waiters:
            return self._idle.popleft()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give_back(waiter.result())  # handed to us just as we were cancelled
            elif waiter in self._waiters:  # a give_back may already have passed over it
                self._waiters.remove(waiter)
            raise

    def give_back(self, executor: ThreadPoolExecutor) -> None:
        if executor not in self._executors:
            executor.shutdown(wait=False)  # one asgiref started on its own (see `released_request_thread`)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(executor)
                return
        self._idle.append(executor)


_pool: RequestThreadPool | None = None


def request_thread_pool() -> RequestThreadPool:
    global _pool
    if _pool is None:
        _pool = RequestThreadPool(settings.ACP_REQUEST_THREADS)
    return _pool


def _current_context() -> ThreadSensitiveContext | None:
    return SyncToAsync.thread_sensitive_context.get(None)


def _take(context: ThreadSensitiveContext | None) -> ThreadPoolExecutor | None:
    return SyncToAsync.context_to_thread_executor.pop(context, None) if context is not None else None


@contextlib.asynccontextmanager
async def released_request_thread():
    """Give the current request's thread back to the pool while the block waits, and borrow one again after.

    Nothing in the block may run thread-sensitive code (`sync_to_async(..., thread_sensitive=False)` only).
    Outside a request's context there is nothing to give back, and nothing is borrowed; nor in stock serving, where
    the request's thread is Django's own.
    """
    context = _current_context() if optimised() else None
    executor = _take(context)
    if executor is None:
        yield
        return
    pool = request_thread_pool()
    pool.give_back(executor)
    try:
        yield
    finally:
        SyncToAsync.context_to_thread_executor[context] = await pool.lend()


class PooledThreadsASGIHandler(ASGIHandler):
    """Django's ASGI handler, with each request's thread borrowed from the pool (see the module's docstring)."""

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)  # refused there, as stock
        async with ThreadSensitiveContext() as context:
            if _current_context() is not context:  # inside another request's context: share its thread
                return await self.handle(scope, receive, send)
            pool = request_thread_pool()
            SyncToAsync.context_to_thread_executor[context] = await pool.lend()
            try:
                await self.handle(scope, receive, send)
            finally:
                # Taken out before the context exits, so asgiref does not shut it down.
                executor = _take(context)
                if executor is not None:
                    pool.give_back(executor)
