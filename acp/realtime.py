"""Wake-ups for long-polls, across server processes, through PostgreSQL LISTEN/NOTIFY.

Writers call `notify(key)` inside their transaction; PostgreSQL delivers it only if and when that
transaction commits. Each server process keeps ONE listening connection (a daemon thread), shared by
all its waiters, and wakes the waiters subscribed to the notified key. A waiter holds no database
connection while it waits, and re-checks the database after subscribing, so nothing committed
between its first check and its subscription is missed. On SQLite (no NOTIFY) waiters poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, connections

from acp.serving.request_threads import released_request_thread

logger = logging.getLogger(__name__)

CHANNEL = "acp_events"
SQLITE_POLL_INTERVAL = 0.25  # seconds between re-checks where there is no NOTIFY


def notify(key: str) -> None:
    """Wake the waiters of `key` in every process when the current transaction commits."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, key])


class Subscription:
    """One waiter's interest in one key; fired from the listener thread, awaited from an event loop."""

    def __init__(self, listener: Listener | None, key: str):
        self.listener = listener
        self.key = key
        self._fired = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_event: asyncio.Event | None = None

    def fire(self) -> None:
        self._fired.set()
        if self._loop is not None and self._async_event is not None:
            # A closed loop means the waiter is gone: nobody to wake.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._async_event.set)

    async def wait(self, timeout: float) -> bool:
        """Sleep until fired or `timeout`; True when fired. Clears the flag for the next round."""
        if self._async_event is None:
            self._loop = asyncio.get_running_loop()
            self._async_event = asyncio.Event()
            if self._fired.is_set():
                self._async_event.set()
        try:
            await asyncio.wait_for(self._async_event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._async_event.clear()
            self._fired.clear()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.unsubscribe(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Listener:
    """The process's single LISTEN connection, run in a daemon thread, reconnecting on failure."""

    def __init__(self):
        self._lock = threading.Lock()
        self._subscriptions: dict[str, set[Subscription]] = defaultdict(set)
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()
        self._stopping = threading.Event()
        self.connected_once = threading.Event()

    def subscribe(self, key: str) -> Subscription:
        self._ensure_started()
        subscription = Subscription(self, key)
        with self._lock:
            self._subscriptions[key].add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            waiters = self._subscriptions.get(subscription.key)
            if waiters is not None:
                waiters.discard(subscription)
                if not waiters:
                    del self._subscriptions[subscription.key]

    @property
    def is_listening(self) -> bool:
        return self._listening.is_set()

    def waiter_count(self) -> int:
        with self._lock:
            return sum(len(waiters) for waiters in self._subscriptions.values())

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listening connection and end the thread (tests, before dropping their database)."""
        with self._lock:
            thread = self._thread
            self._thread = None
        if thread is None:
            return
        self._stopping.set()
        thread.join(timeout)
        self._stopping.clear()

    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="acp-listener", daemon=True)
                self._thread.start()
        # The first subscriber waits (briefly) for LISTEN to be in place; later ones never wait.
        self._listening.wait(timeout=5)

    def _dispatch(self, key: str) -> None:
        with self._lock:
            waiters = list(self._subscriptions.get(key, ()))
        for subscription in waiters:
            subscription.fire()

    def _wake_everyone(self) -> None:
        with self._lock:
            waiters = [s for subs in self._subscriptions.values() for s in subs]
        for subscription in waiters:
            subscription.fire()

    def _run(self) -> None:
        import psycopg

        backoff = 0.5
        while not self._stopping.is_set():
            try:
                with psycopg.connect(**_listener_conninfo(), autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    self.connected_once.set()
                    backoff = 0.5
                    # Anything notified while we were disconnected is lost: make everyone re-check.
                    self._wake_everyone()
                    while not self._stopping.is_set():
                        # The timeout only bounds how long a stop() waits; notifications arrive at once.
                        for notification in conn.notifies(timeout=1.0):
                            self._dispatch(notification.payload)
            except Exception:
                logger.warning("acp listener: connection lost; reconnecting in %.1fs", backoff, exc_info=True)
            self._listening.clear()
            self._wake_everyone()
            if not self._stopping.is_set():
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)


def _listener_conninfo() -> dict[str, Any]:
    settings_dict = connections["default"].settings_dict
    params = {
        "dbname": settings_dict["NAME"],
        "user": settings_dict.get("USER") or None,
        "password": settings_dict.get("PASSWORD") or None,
        "host": settings_dict.get("HOST") or None,
        "port": settings_dict.get("PORT") or None,
        "application_name": "acp-listener",
    }
    for option in ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout"):
        if option in settings_dict.get("OPTIONS", {}):
            params[option] = settings_dict["OPTIONS"][option]
    return {name: value for name, value in params.items() if value is not None}


_listener = Listener()


def get_listener() -> Listener:
    return _listener


def subscribe(key: str) -> Subscription:
    """Subscribe to `key`. On SQLite the subscription is never fired: waiters poll instead."""
    if connection.vendor != "postgresql":
        return Subscription(None, key)
    return _listener.subscribe(key)


def recheck_interval() -> float:
    if connection.vendor != "postgresql" or not _listener.is_listening:
        return SQLITE_POLL_INTERVAL
    # A last resort on PostgreSQL, for a wake-up lost some other way: the listener already wakes every waiter when
    # its connection drops and when it is back, and every waiter answers by its deadline (at most
    # ACP_LONG_POLL_MAX_WAIT, 30 s by default; the daemon's next poll checks first), so waits of the default
    # length never re-check on a timer. A re-check costs a thread hop, a pooled connection and a query: 5,000
    # daemons waiting 300 s and re-checking every 60 s cost a worker ~30 % of its CPU (bench/run.py idle-polls).
    return settings.ACP_LONG_POLL_RECHECK


Check = Callable[[], Any]


@dataclass
class LongPoll:
    """What a view returns to have its answer waited for: `check()` until it gives a result, else timeout.

    `check` and `on_timeout` are plain synchronous functions; they run in a worker thread and must not
    leave a transaction open.
    """

    key: str
    timeout: float
    check: Check  # returns a result, or None while there is nothing yet
    on_timeout: Check
    on_answer: Callable[[int, str], None] | None = None  # called in a worker thread with the answer's status and JSON


async def wait_for(poll: LongPoll) -> Any:
    """Run `poll` to its end: the first non-None `check()`, or `on_timeout()` after `poll.timeout`.

    The request's thread goes back to the pool meanwhile; the checks run on the event loop's default executor.
    """
    from asgiref.sync import sync_to_async

    loop = asyncio.get_running_loop()
    deadline = loop.time() + poll.timeout
    async with released_request_thread():
        subscription = await sync_to_async(subscribe, thread_sensitive=False)(poll.key)
        try:
            while True:
                result = await sync_to_async(_run_released, thread_sensitive=False)(poll.check)
                if result is not None:
                    return result
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return await sync_to_async(_run_released, thread_sensitive=False)(poll.on_timeout)
                await subscription.wait(min(remaining, recheck_interval()))
        finally:
            subscription.close()


def _run_released(function: Check) -> Any:
    """Run `function`, then give its thread's database connection back so no waiter holds one."""
    try:
        return function()
    finally:
        if not connection.in_atomic_block:
            connection.close()
