"""HTTP to the ACP server that survives the server going away: retries with backoff until it answers."""

from __future__ import annotations

import datetime
import email.utils
import logging
import random
import threading
import time
from typing import Any

import httpx

from acp.daemon import __version__

logger = logging.getLogger("acp.daemon")

RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_RETRY_AFTER = 3600.0  # seconds; a longer (or absurd) Retry-After is taken as this


class Unauthorized(Exception):
    """The token was refused (401): retrying cannot help."""


class Stopped(Exception):
    """The daemon is stopping; the request was abandoned."""


class Unavailable(Exception):
    """The server did not answer (a `retry=False` request)."""


class Backoff:
    """Pauses between attempts: "decorrelated jitter" (each pause random in [minimum, 3 × the last], that range
    capped at maximum), so daemons that lost the server together do not all come back at the same instant."""

    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None):
        self.minimum = minimum
        self.maximum = max(maximum, minimum)
        self._rng = rng or random.Random()
        self._last = minimum

    def next(self) -> float:
        self._last = self._rng.uniform(self.minimum, min(self.maximum, self._last * 3))
        return self._last

    def reset(self) -> None:
        self._last = self.minimum

    def after_clean_end(self) -> float:
        """The pause before reconnecting a stream the server ended on purpose (a deploy ends every daemon's at once):
        random in [0, minimum] ("full jitter"), and the backoff starts over."""
        self.reset()
        return self._rng.uniform(0, self.minimum)

    def retry_after(self, seconds: float) -> float:
        """A server's Retry-After, with up to a quarter more at random: never sooner, and not all at once."""
        return seconds * self._rng.uniform(1.0, 1.25)


class Api:
    """A thin client of the ACP API.

    Short requests (acks, heartbeats, event batches) from every thread share ONE keep-alive connection; a long
    request (a long-poll, the machine channel) asks for a connection of its own (`own_connection=True`: one per
    thread) so it never holds the others up.

    `request` returns the server's answer for anything but a transport error or a 5xx/429, which it
    retries with jittered exponential backoff (`Backoff`, from `min_backoff` to `max_backoff`, or longer when a
    429/503's `Retry-After` asks for it) until it gets an answer or `stopping` is set — so every loop of the
    daemon reconnects by itself after a server restart.
    """

    def __init__(self, url: str, token: str, stopping: threading.Event, *, min_backoff=0.5, max_backoff=10.0):
        self.base_url = url.rstrip("/")
        self.token = token
        self.stopping = stopping
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self._shared: httpx.Client | None = None
        self._shared_lock = threading.Lock()
        self._local = threading.local()

    def backoff(self) -> Backoff:
        return Backoff(self.min_backoff, self.max_backoff)

    def _client(self, *, connections: int | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.token}", "User-Agent": f"acp-daemon/{__version__}"},
            # the pool wait covers the other threads' requests ahead of ours on the shared connection
            timeout=httpx.Timeout(30.0, pool=120.0),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    @property
    def http(self) -> httpx.Client:
        """The keep-alive client every thread's short requests share (one connection: they queue for it)."""
        with self._shared_lock:
            if self._shared is None:
                self._shared = self._client(connections=1)
            return self._shared

    @property
    def own_http(self) -> httpx.Client:
        """This thread's own client, for requests that stay open (long-polls, the channel)."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._client(connections=1)
        return client

    def close(self) -> None:
        """Close this thread's own connection (and, from any thread, the shared one)."""
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()
            self._local.client = None
        with self._shared_lock:
            if self._shared is not None:
                self._shared.close()
                self._shared = None

    def _close_own(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()
            self._local.client = None

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params=None,
        headers=None,
        timeout: float | httpx.Timeout | None = None,
        retry=True,
        own_connection=False,
        stream=False,
        cancel: threading.Event | None = None,
    ):
        """The server's answer; with `retry=False` one attempt only, raising `Unavailable` when it fails.

        With `stream=True` the body is not read: the caller reads it and must close the response. Once `cancel` is
        set (as once `stopping` is) no further attempt is made: `Stopped`.
        """
        backoff = self.backoff()
        while True:
            if self.stopping.is_set() or (cancel is not None and cancel.is_set()):
                raise Stopped()
            client = self.own_http if own_connection else self.http
            pause = None
            try:
                kwargs = {"json": json, "params": params, "headers": headers}
                if timeout is not None:
                    kwargs["timeout"] = timeout
                response = client.send(client.build_request(method, path, **kwargs), stream=stream)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                if own_connection:
                    self._close_own()  # start over with a fresh connection (the shared pool drops a broken one)
            else:
                if response.status_code == 401:
                    response.read()
                    response.close()
                    raise Unauthorized(response.text)
                if response.status_code not in RETRY_STATUSES:
                    return response
                response.close()
                problem = f"HTTP {response.status_code}"
                # A 429 or 503 says when to come back: retrying sooner only spends the budget again.
                if seconds := retry_after(response):
                    pause = backoff.retry_after(seconds)
            if not retry:
                raise Unavailable(f"{method} {path}: {problem}")
            pause = max(pause or 0.0, backoff.next())
            logger.warning("%s %s failed (%s); retrying in %.1fs", method, path, problem, pause)
            if self._pause(pause, cancel):
                raise Stopped()

    def _pause(self, seconds: float, cancel: threading.Event | None) -> bool:
        """Wait `seconds`; True as soon as the daemon is stopping, or `cancel` is set, meanwhile."""
        if cancel is None:
            return self.stopping.wait(seconds)
        deadline = time.monotonic() + seconds
        while not cancel.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.stopping.wait(min(left, 0.1)):
                return True
        return True

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs):
        return self.request("POST", path, json=json if json is not None else {}, **kwargs)


def retry_after(response: httpx.Response) -> float:
    """The seconds a `Retry-After` header asks for (a number or an HTTP date), 0 when there is none."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = _seconds_until(value)
    return min(seconds, MAX_RETRY_AFTER) if seconds > 0 else 0.0  # NaN and negatives are 0


def _seconds_until(http_date: str) -> float:
    try:
        when = email.utils.parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return (when - datetime.datetime.now(datetime.UTC)).total_seconds()
