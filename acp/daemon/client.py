"""HTTP to the ACP server that survives the server going away: retries with backoff until it answers."""

from __future__ import annotations

import datetime
import email.utils
import logging
import threading
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


class Api:
    """A thin client of the ACP API. Each thread gets its own httpx.Client (its own connections).

    `request` returns the server's answer for anything but a transport error or a 5xx/429, which it
    retries with exponential backoff (`min_backoff` doubling to `max_backoff`, or longer when a 429/503's
    `Retry-After` asks for it) until it gets an answer or `stopping` is set — so every loop of the daemon
    reconnects by itself after a server restart.
    """

    def __init__(self, url: str, token: str, stopping: threading.Event, *, min_backoff=0.5, max_backoff=10.0):
        self.base_url = url.rstrip("/")
        self.token = token
        self.stopping = stopping
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self._local = threading.local()

    @property
    def http(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(
                base_url=self.base_url,
                headers={"Authorization": f"Bearer {self.token}", "User-Agent": f"acp-daemon/{__version__}"},
                timeout=httpx.Timeout(30.0),
            )
            self._local.client = client
        return client

    def close(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()
            self._local.client = None

    def request(
        self, method: str, path: str, *, json: Any = None, params=None, timeout: float | None = None, retry=True
    ):
        """The server's answer; with `retry=False` one attempt only, raising `Unavailable` when it fails."""
        backoff = self.min_backoff
        while True:
            if self.stopping.is_set():
                raise Stopped()
            problem, pause = None, backoff
            try:
                kwargs = {"json": json, "params": params}
                if timeout is not None:
                    kwargs["timeout"] = timeout
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                self.close()  # start over with fresh connections
            else:
                if response.status_code == 401:
                    raise Unauthorized(response.text)
                if response.status_code not in RETRY_STATUSES:
                    return response
                problem = f"HTTP {response.status_code}"
                # A 429 or 503 says when to come back: retrying sooner only spends the budget again.
                pause = max(pause, retry_after(response))
            if not retry:
                raise Unavailable(f"{method} {path}: {problem}")
            logger.warning("%s %s failed (%s); retrying in %.1fs", method, path, problem, pause)
            if self.stopping.wait(pause):
                raise Stopped()
            backoff = min(backoff * 2, self.max_backoff)

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
