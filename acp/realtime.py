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
import functools
import logging
import random
import select
import threading
import time
from collections import defaultdict
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.utils import load_backend

logger = logging.getLogger(__name__)

CHANNEL = "acp_events"
SQLITE_POLL_INTERVAL = 0.25  # seconds between re-checks where there is no NOTIFY
LISTENER_DOWN_STREAM_RECHECK = 5.0  # at most, for a long-lived stream while the LISTEN connection is down


def machine_key(device_id) -> str:
    """The key of everything a machine's daemon waits for: its launches, its sessions' commands, its channel."""
    return f"machine:{device_id}"


def from_origin(key: str, origin) -> str:
    """A notification of `key` that does not wake the subscription made with this `origin` (the writer's own: a
    channel woken by its own open would fetch again for nothing)."""
    return f"{key} {origin}"


def notify(*keys: str) -> None:
    """Wake the waiters of each of `keys` in every process when the current transaction commits (one statement)."""
    if connection.vendor != "postgresql" or not keys:
        return
    with connection.cursor() as cursor:
        params = [value for key in keys for value in (CHANNEL, key)]
        cursor.execute("SELECT " + ", ".join(["pg_notify(%s, %s)"] * len(keys)), params)


class Subscription:
    """One waiter's interest in one key; fired from the listener thread, awaited from an event loop.

    A wait is one future and one timer, with no task and no exception: 10,000 idle channels each wait out a
    keepalive every 15 s, and `asyncio.wait_for` made each of those a task, a coroutine and a TimeoutError's
    reference cycle, which kept the cyclic collector's young passes at 100–200 ms and its middle ones near a second
    (bench/channel.py, a create's p99 with the channels held).
    """

    def __init__(self, listener: Listener | None, key: str, origin: str | None = None):
        self.listener = listener
        self.key = key
        self.origin = origin
        self._fired = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future | None = None

    def fire(self) -> None:
        self._fired.set()
        if self._loop is not None:
            # A closed loop means the waiter is gone: nobody to wake.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._wake, True)

    def _wake(self, fired: bool) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(fired)

    async def wait(self, timeout: float) -> bool:
        """Sleep until fired or `timeout`; True when fired. Clears the flag for the next round."""
        loop = self._loop = asyncio.get_running_loop()
        if self._fired.is_set():
            self._fired.clear()
            return True
        # A fire from now on reaches `_wake` on this loop, after this coroutine yields: the waiter is in place.
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(max(0.0, timeout), self._wake, False)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None
            self._fired.clear()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.unsubscribe(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Listener:
    """The process's single LISTEN connection, run in a daemon thread, checked by a timed round trip, and replaced
    when it fails."""

    def __init__(self):
        self._lock = threading.Lock()
        self._subscriptions: dict[str, set[Subscription]] = defaultdict(set)
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()
        self._stopping = threading.Event()

    def subscribe(self, key: str, origin: str | None = None) -> Subscription:
        self._ensure_started()
        subscription = Subscription(self, key, origin)
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

    @property
    def is_started(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def state(self) -> dict:
        """For /healthz: whether the LISTEN connection is up ("idle": no waiter ever needed it), and the waiters."""
        connection_state = "connected" if self.is_listening else "disconnected" if self.is_started else "idle"
        return {"connection": connection_state, "waiters": self.waiter_count()}

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

    def start(self) -> None:
        """Start the listening thread unless it runs; without waiting for LISTEN to be in place."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="acp-listener", daemon=True)
                self._thread.start()

    def _ensure_started(self) -> None:
        self.start()
        # The first subscriber waits (briefly) for LISTEN to be in place; later ones never wait.
        self._listening.wait(timeout=5)

    def _dispatch(self, payload: str) -> None:
        key, _, origin = payload.partition(" ")  # see `from_origin`
        with self._lock:
            waiters = list(self._subscriptions.get(key, ()))
        for subscription in waiters:
            if not origin or subscription.origin != origin:
                subscription.fire()

    def wake_everyone(self) -> None:
        """Make every waiter re-check now (the connection came or went, or the server is shutting down)."""
        with self._lock:
            waiters = [s for subs in self._subscriptions.values() for s in subs]
        for subscription in waiters:
            subscription.fire()

    def _run(self) -> None:
        import psycopg

        backoff = 0.5
        while not self._stopping.is_set():
            try:
                conn = psycopg.connect(**_listener_conninfo(), autocommit=True)
                try:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    backoff = 0.5
                    # Anything notified while we were disconnected is lost: make everyone re-check.
                    self.wake_everyone()
                    self._listen(conn)
                finally:
                    conn.close()  # not `with`: its rollback would wait for ever on a backend that does not answer
            except Exception:
                logger.warning("acp listener: connection lost; reconnecting in %.1fs", backoff, exc_info=True)
            self._listening.clear()
            self.wake_everyone()
            if not self._stopping.is_set():
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _listen(self, conn) -> None:
        """Dispatch notifications until stopped; raise when a round trip finds the connection no longer answers."""
        next_check = time.monotonic() + settings.ACP_LISTENER_CHECK_INTERVAL
        while not self._stopping.is_set():
            # The timeout only bounds how long a stop() or the next check waits; notifications arrive at once.
            timeout = max(0.0, min(1.0, next_check - time.monotonic()))
            for notification in conn.notifies(timeout=timeout):
                self._dispatch(notification.payload)
            if time.monotonic() >= next_check:
                # An open connection to a frozen backend (or over a dropped route) never fails by itself.
                for payload in round_trip(conn.pgconn, settings.ACP_LISTENER_CHECK_TIMEOUT):
                    self._dispatch(payload)
                next_check = time.monotonic() + settings.ACP_LISTENER_CHECK_INTERVAL


def round_trip(pgconn, timeout: float) -> list[str]:
    """`SELECT 1` on a libpq connection, failing after `timeout` seconds without an answer.

    psycopg's own calls wait for ever; this one waits on the socket with a deadline. Returns the payloads of the
    notifications that arrived meanwhile (libpq queues them; nobody else would read them).
    """
    import psycopg
    from psycopg import pq

    deadline = time.monotonic() + timeout
    pgconn.send_query(b"SELECT 1")
    while pgconn.flush():
        _wait_socket(pgconn, deadline, write=True)
    pgconn.consume_input()
    while pgconn.is_busy():
        _wait_socket(pgconn, deadline)
        pgconn.consume_input()
    while (result := pgconn.get_result()) is not None:
        if result.status != pq.ExecStatus.TUPLES_OK:
            raise psycopg.OperationalError(f"listener check failed: {result.error_message.decode(errors='replace')}")
    payloads = []
    while (notification := pgconn.notifies()) is not None:
        payloads.append(notification.extra.decode())
    return payloads


def _wait_socket(pgconn, deadline: float, *, write: bool = False) -> None:
    # poll(), not select(): a listener that reconnects in a process holding 10,000 channels gets a descriptor above
    # select()'s 1,024, where select() refuses to wait at all (each check then failed, and the listener reconnected).
    remaining = deadline - time.monotonic()
    waiting = select.poll()
    waiting.register(pgconn.socket, select.POLLOUT if write else select.POLLIN)
    if remaining <= 0 or not waiting.poll(remaining * 1000):
        raise TimeoutError("the listener's database connection did not answer in time")


def _listener_conninfo() -> dict[str, Any]:
    settings_dict = connections["default"].settings_dict
    params = {
        "dbname": settings_dict["NAME"],
        "user": settings_dict.get("USER") or None,
        "password": settings_dict.get("PASSWORD") or None,
        "host": settings_dict.get("HOST") or None,
        "port": settings_dict.get("PORT") or None,
        "application_name": "acp-listener",
        # The kernel notices a dead peer or route (no answer to keepalives) on its own; round_trip() the rest.
        "keepalives": 1,
        "keepalives_idle": max(1, int(settings.ACP_LISTENER_CHECK_INTERVAL)),
        "keepalives_interval": max(1, int(settings.ACP_LISTENER_CHECK_TIMEOUT)),
        "keepalives_count": 3,
    }
    for option in ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout"):
        if option in settings_dict.get("OPTIONS", {}):
            params[option] = settings_dict["OPTIONS"][option]
    return {name: value for name, value in params.items() if value is not None}


_listener = Listener()


def get_listener() -> Listener:
    return _listener


def _on_postgresql() -> bool:
    """Whether the database is PostgreSQL, asked without `connection`: in the event loop's thread asgiref keeps
    Django's connections per task, so `connection.vendor` there built a DatabaseWrapper (and its reference cycles)
    for every channel connect and every long-poll (tests/acp/test_request_garbage.py)."""
    return _vendor(connections.settings[DEFAULT_DB_ALIAS]["ENGINE"]) == "postgresql"


@functools.cache
def _vendor(engine: str) -> str:
    return load_backend(engine).DatabaseWrapper.vendor


def subscribe(key: str, origin: str | None = None) -> Subscription:
    """Subscribe to `key` (not woken by its notifications `from_origin(key, origin)`). On SQLite the subscription is
    never fired: waiters poll instead."""
    if not _on_postgresql():
        return Subscription(None, key, origin)
    return _listener.subscribe(key, origin)


def recheck_interval(last_resort: float | None = None) -> float:
    """Seconds a waiter may sleep before re-checking the database: a quarter of a second where there is no LISTEN
    (SQLite) or while the connection is lost (up to five for a long-lived stream), else `last_resort` (default
    ACP_LONG_POLL_RECHECK)."""
    if not _on_postgresql():
        return SQLITE_POLL_INTERVAL
    if not _listener.is_listening:
        # Long-lived streams (a `last_resort` of their own) back off: 10,000 channels re-checking four times a
        # second while the listener reconnects would take the database. It wakes them all once it is back.
        return SQLITE_POLL_INTERVAL if last_resort is None else LISTENER_DOWN_STREAM_RECHECK * random.uniform(0.5, 1)
    # A last resort on PostgreSQL, for a wake-up lost some other way: the listener already wakes every waiter when
    # its connection drops and when it is back, and every waiter answers by its deadline (at most
    # ACP_LONG_POLL_MAX_WAIT, 30 s by default; the daemon's next poll checks first), so waits of the default
    # length never re-check on a timer. A re-check costs a thread hop, a pooled connection and a query: 5,000
    # daemons waiting 300 s and re-checking every 60 s cost a worker ~30 % of its CPU (bench/run.py idle-polls).
    return settings.ACP_LONG_POLL_RECHECK if last_resort is None else last_resort
