"""Rate limits per token (README, "Rate limits"), so one client in a tight loop cannot starve the others.

Every token has two buckets: "daemon" for the daemon's loop (the actions a view lists in `daemon_actions`: polls,
acknowledgements, heartbeats, completions) and "api" for everything else, so a user's own calls and their daemon's
polls never use up each other's budget. A user token's buckets hold ACP_RATELIMIT_USER requests per window, a device
token's ACP_RATELIMIT_DEVICE.

Windows are fixed and aligned to the clock (window n covers [n·period, (n+1)·period)), so a request costs one
increment of a counter in the store (`limits`' Redis storage: one Lua call; `memory://`: a dict, `MemoryWindows`)
and the window's reset time needs no second round trip. When the store does not answer, requests are let in: rate
limiting protects the service and must not take it down.
"""

from __future__ import annotations

import functools
import heapq
import logging
import math
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from limits import RateLimitItem, parse
from limits.errors import ConfigurationError, StorageError
from limits.storage import Storage, storage_from_string
from rest_framework import status
from rest_framework.throttling import BaseThrottle

from acp.api.errors import ApiError

logger = logging.getLogger(__name__)

DAEMON, API = "daemon", "api"
# The ASGI scope key of a request handed on to Django after it was counted (a `Counted`): acp/serving/fast_streams.py
# counts a channel connect before it knows whether it will serve it.
COUNTED_SCOPE_KEY = "acp.rate_limit_counted"
# After the store failed, let requests in without asking it for this many seconds (no timeout paid per request).
STORE_RETRY_AFTER = 5.0


@dataclass(frozen=True)
class Usage:
    """A token's bucket after one request: `count` requests in the window that ends at `reset_at` (epoch)."""

    bucket: str
    limit: RateLimitItem
    count: int
    reset_at: int

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit.amount

    def retry_after(self, now: float) -> int:
        return max(1, math.ceil(self.reset_at - now))

    def headers(self, now: float) -> dict[str, str]:
        """`RateLimit-*` (IETF draft: Reset in seconds from now) and `X-RateLimit-*` (GitHub's: Reset as epoch)."""
        limit, remaining = str(self.limit.amount), str(max(0, self.limit.amount - self.count))
        return {
            "RateLimit-Limit": limit,
            "RateLimit-Remaining": remaining,
            "RateLimit-Reset": str(self.retry_after(now)),
            "X-RateLimit-Limit": limit,
            "X-RateLimit-Remaining": remaining,
            "X-RateLimit-Reset": str(self.reset_at),
        }


@dataclass(frozen=True)
class Counted:
    """A request already counted as `usage` against the budget of the token with `token_id`."""

    token_id: object
    usage: Usage


class RateLimited(ApiError):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "rate_limited"

    def __init__(self, usage: Usage, now: float):
        self.wait = usage.retry_after(now)  # the exception handler's Retry-After
        window = f"{usage.limit.multiples} {usage.limit.GRANULARITY.name}"
        super().__init__(
            f"Rate limit exceeded: this token may make {usage.limit.amount} {usage.bucket} requests per {window}; "
            f"retry in {self.wait} s.",
            details={"bucket": usage.bucket, "limit": usage.limit.amount, "window": window, "retryAfter": self.wait},
        )


class TokenRateThrottle(BaseThrottle):
    """Counts each token-authenticated request against its token's bucket; over the budget → 429 `rate_limited`.

    DRF checks throttles after authentication and permissions, so only requests a token may make are counted.
    The usage is left on the request for RateLimitHeadersMiddleware, which adds the headers to every response
    (long-polls' included: they are answered outside DRF).
    """

    def allow_request(self, request, view):
        token = request.auth
        if token is None or not settings.ACP_RATELIMIT_ENABLED:
            return True
        bucket = DAEMON if getattr(view, "action", None) in getattr(view, "daemon_actions", ()) else API
        now = time.time()
        usage = _counted_already(request, token, bucket) or token_usage(token, bucket, now)
        if usage is None:
            return True
        request._request.acp_rate_limit = usage
        if usage.exceeded:
            raise RateLimited(usage, now)
        return True


def _counted_already(request, token, bucket: str) -> Usage | None:
    counted = getattr(request._request, "scope", {}).get(COUNTED_SCOPE_KEY)
    if counted is None or counted.token_id != token.pk or counted.usage.bucket != bucket:
        return None
    return counted.usage


def token_usage(token, bucket: str, now: float) -> Usage | None:
    """Count one request of `token` in its `bucket`: the bucket's usage, or None when the store does not answer."""
    limit = token_limit(device_token=token.device_id is not None)
    return _limiter().hit(limit, bucket, str(token.pk), now)


def rate_limit_headers(request) -> dict[str, str]:
    usage = getattr(request, "acp_rate_limit", None)
    return usage.headers(time.time()) if usage is not None else {}


def token_limit(*, device_token: bool) -> RateLimitItem:
    return _parse_limit("ACP_RATELIMIT_DEVICE" if device_token else "ACP_RATELIMIT_USER")


@functools.cache
def _parse_limit(setting: str) -> RateLimitItem:
    value = getattr(settings, setting)
    try:
        return parse(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f'{setting}={value!r} is not a rate like "600/minute".') from exc


class Limiter:
    """Fixed, clock-aligned windows counted in a store (`limits`' Redis storage, or `MemoryWindows`); None when the
    store does not answer."""

    def __init__(self, storage: Storage | MemoryWindows):
        self.storage = storage
        self._skip_until = 0.0
        self._lock = threading.Lock()

    def hit(self, limit: RateLimitItem, bucket: str, token_id: str, now: float) -> Usage | None:
        if now < self._skip_until:
            return None
        period = limit.get_expiry()
        window = int(now // period)
        try:
            count = self.storage.incr(limit.key_for(bucket, token_id, window), period)
        except StorageError as exc:
            self._store_failed(exc, now)
            return None
        return Usage(bucket, limit, count, (window + 1) * period)

    def _store_failed(self, exc: StorageError, now: float) -> None:
        with self._lock:
            if now < self._skip_until:
                return
            self._skip_until = now + STORE_RETRY_AFTER
        logger.warning(
            "Rate-limit store %s failed (%s); requests are not rate limited for %g s.",
            settings.ACP_RATELIMIT_STORAGE_URL,
            exc.storage_error,
            STORE_RETRY_AFTER,
        )


class MemoryWindows:
    """The `memory://` store: this process's counts, each dropped at the first count after it expired.

    In place of `limits`' MemoryStorage, which re-arms on every count a timer that walks every key 10 ms later: with
    the tokens of 10,000 daemons counted in one window (a reconnect storm), each request then paid for a walk over
    10,000 keys, a tenth of a core in all. Here a count costs the same whatever the number of keys."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._expiries: list[tuple[float, str]] = []  # a heap: (when, key) for each key counted

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        """Count `amount` for `key`, which expires `expiry` seconds after its first count (as `limits`' storages)."""
        now = time.time()
        with self._lock:
            while self._expiries and self._expiries[0][0] <= now:
                del self._counts[heapq.heappop(self._expiries)[1]]
            if key not in self._counts:
                self._counts[key] = 0
                heapq.heappush(self._expiries, (now + expiry, key))
            self._counts[key] += amount
            return self._counts[key]

    def __len__(self) -> int:
        return len(self._counts)


@functools.cache
def _limiter() -> Limiter:
    url, timeout = settings.ACP_RATELIMIT_STORAGE_URL, settings.ACP_RATELIMIT_STORAGE_TIMEOUT
    if urlsplit(url).scheme == "memory":
        return Limiter(MemoryWindows())
    try:
        # The options reach redis.from_url (which does not connect yet); the memory storage ignores them.
        storage = storage_from_string(url, wrap_exceptions=True, socket_timeout=timeout, socket_connect_timeout=timeout)
    except ConfigurationError as exc:
        raise ImproperlyConfigured(f"ACP_RATELIMIT_STORAGE_URL={url!r}: {exc}") from exc
    return Limiter(storage)


@checks.register
def check_rate_limit_settings(app_configs=None, **kwargs):
    """A bad rate or store URL is reported by `manage.py check` (`migrate` runs it too), not by the first request."""
    if not settings.ACP_RATELIMIT_ENABLED:
        return []
    errors = []
    for build in (
        functools.partial(token_limit, device_token=False),
        functools.partial(token_limit, device_token=True),
        _limiter,
    ):
        try:
            build()
        except ImproperlyConfigured as exc:
            errors.append(checks.Error(str(exc), id="acp.E101"))
    return errors


def _settings_changed(setting, **kwargs):
    if setting.startswith("ACP_RATELIMIT_"):
        _limiter.cache_clear()
        _parse_limit.cache_clear()


setting_changed.connect(_settings_changed)
