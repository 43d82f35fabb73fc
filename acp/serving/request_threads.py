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
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from asgiref.sync import SyncToAsync, ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler

from acp.db_release import run_released
from acp.serving import optimised

T = TypeVar("T")


class RequestThreadPool:
    """`size` one-thread executors, lent in arrival order to requests and to background work (a stream's fetch, a
    channel's open, a long-poll's check, the presence refresh).

    Background work holds at most half of them at once and goes first within that share: a burst of it (10,000
    channels woken together when the listener reconnects) leaves requests the other half, and a channel's connect
    does not queue behind every request in flight (32 prepares held the connects of a reconnect storm to 10 a
    second, bench/channel.py), which the default executor's own threads had given them before.

    A server process has one event loop, but tests have several (the test client's, a fake daemon's own client's),
    each in its own thread and all sharing the process's pool: its books are kept under a lock, and a waiter of
    another loop is handed its executor through that loop (a future is resolved on its own loop's thread only).
    """

    def __init__(self, size: int):
        self._executors = [ThreadPoolExecutor(max_workers=1, thread_name_prefix="acp-request") for _ in range(size)]
        for executor in self._executors:
            executor.submit(int)  # start its thread now: the process's threads do not grow with its load
        self._idle = collections.deque(self._executors)
        self._background_share = max(1, size // 2)
        self._background_lent = 0
        # Per kind (background or not); a cancelled waiter stays in place and is passed over when its turn comes.
        self._waiters: dict[bool, collections.deque[asyncio.Future]] = {
            False: collections.deque(),
            True: collections.deque(),
        }
        self._lock = threading.Lock()

    async def lend(self, *, background: bool = False) -> ThreadPoolExecutor:
        waiter = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waiters[background].append(waiter)
        self._hand_out()
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give_back(waiter.result(), background=background)  # handed to us just as we were cancelled
            raise

    def give_back(self, executor: ThreadPoolExecutor, *, background: bool = False) -> None:
        if executor not in self._executors:
            executor.shutdown(wait=False)  # one asgiref started on its own (see `released_request_thread`)
            return
        with self._lock:
            if background:
                self._background_lent -= 1
            self._idle.append(executor)
        self._hand_out()

    def _hand_out(self) -> None:
        """Give idle executors to the waiters in arrival order, background work first while within its share."""
        with self._lock:
            handed = []
            while self._idle and (turn := self._next_waiter()) is not None:
                background, waiter = turn
                if background:
                    self._background_lent += 1
                handed.append((waiter, self._idle.popleft(), background))
        for waiter, executor, background in handed:
            self._deliver(waiter, executor, background)

    def _deliver(self, waiter: asyncio.Future, executor: ThreadPoolExecutor, background: bool) -> None:
        loop = waiter.get_loop()
        if loop is not _running_loop():
            try:
                loop.call_soon_threadsafe(self._deliver, waiter, executor, background)
            except RuntimeError:  # that loop is closed
                self.give_back(executor, background=background)
            return
        if waiter.done():  # cancelled since it was chosen
            self.give_back(executor, background=background)
        else:
            waiter.set_result(executor)

    def _next_waiter(self) -> tuple[bool, asyncio.Future] | None:
        for queue in self._waiters.values():
            while queue and queue[0].done():  # cancelled
                queue.popleft()
        if self._waiters[True] and self._background_lent < self._background_share:
            return True, self._waiters[True].popleft()
        if self._waiters[False]:
            return False, self._waiters[False].popleft()
        return None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


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


async def run_in_background(function: Callable[[], T]) -> T:
    """Run `function` (synchronous, not thread-sensitive) with `run_released`, on a thread lent from the pool within
    background work's share; in stock serving on the event loop's default executor.

    Waiters, streams and the presence refresh run here rather than on the default executor, which starts threads
    of its own as they are needed: a process holding 10,000 channels then runs the same threads as an idle one.
    """
    if not optimised():
        return await sync_to_async(run_released, thread_sensitive=False)(function)
    pool = request_thread_pool()
    executor = await pool.lend(background=True)
    try:
        done = executor.submit(contextvars.copy_context().run, run_released, function)
    except BaseException:
        pool.give_back(executor, background=True)
        raise
    # Given back when the thread is done, not when the awaiting task is cancelled while the function still runs;
    # from that thread (the pool hands it on to a waiting loop itself).
    done.add_done_callback(lambda _: pool.give_back(executor, background=True))
    return await asyncio.wrap_future(done)
