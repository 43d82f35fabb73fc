"""A lean way in for the event streams that are opened all the time: a machine's channel (every daemon holds one and
reopens it after every deploy, so 10,000 daemons reconnect within a minute).

Opening one through Django's handler, its middleware and DRF cost a worker 10–14 ms of CPU, most of it spent on
generic request plumbing (bench/channel.py --profile). For a route an app lists in its AppConfig's `fast_streams`,
the plain case of a daemon connecting — GET, no query string, `Accept: text/event-stream` (or none), a usable
token in `Authorization: Bearer` or `X-API-Key` with the scope the view asks, the token's budget not spent, a
host Django accepts, HTTPS where it is required — is served here: the same authentication, rate limit and opener
as the DRF view, on a worker thread, then the same stream body (acp/api/sse.py). Every other request, and any the
opener refuses (not the caller's machine), goes on to Django, which answers it as it always does (400, 401, 403,
404, 429, …): only answers Django would give with a 200 are given here, with the headers Django would send (a
test compares them). A request handed on after its token was counted carries that count to Django's throttle
(`COUNTED_SCOPE_KEY`), which uses it instead of counting the request a second time. A database outage is answered
503 with a Retry-After, as Django answers it.

With ACP_SERVING=stock this path is off and Django serves every stream.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

from django.conf import settings
from django.core.signals import setting_changed
from django.db import connection
from django.http.request import split_domain_port, validate_host
from django.urls import Resolver404, resolve
from rest_framework.exceptions import AuthenticationFailed

from acp import composition
from acp.api.authentication import authenticate_found_token, token_key
from acp.api.errors import ServiceUnavailable, is_database_outage
from acp.api.permissions import needed_scope
from acp.api.sse import MEDIA_TYPE, STREAM_HEADERS, EventStream, OpenedStream, open_stream
from acp.api.throttling import API, COUNTED_SCOPE_KEY, DAEMON, Counted, token_usage
from acp.asgi_guards import refuse, replaying
from acp.selectors import tokens_by_hash
from acp.serving.request_threads import run_in_background

BUSY_RETRY_AFTER = (5, 30)  # seconds: the range a refused connect is told to wait, beyond the slots taken ahead


@dataclass(frozen=True)
class FastStream:
    """A stream route served here in its plain case.

    `pattern` picks the paths worth resolving (the others pay nothing); a path is served only where the URL conf
    resolves it to `view` (a DRF viewset) with `action` for GET, so the URL conf stays the one place that says
    what a path is. `view` is also read for who may call it (`device_token_actions`) and its rate-limit bucket
    (`daemon_actions`); `open(requests)` runs on a request thread with a batch of `OpenRequest`s, authenticated and
    within their budgets, and returns each one's stream, or None to let Django answer it.
    """

    pattern: re.Pattern
    view: type
    action: str
    open: Callable[[list[OpenRequest]], list[EventStream | None]]

    def match(self, path: str) -> dict | None:
        if self.pattern.fullmatch(path) is None:
            return None
        try:
            found = resolve(path)
        except Resolver404:
            return None
        if getattr(found.func, "cls", None) is not self.view or found.func.actions.get("get") != self.action:
            return None
        return found.kwargs


@dataclass(frozen=True)
class OpenRequest:
    """A connect a `FastStream` opens: `caller.user` and `caller.auth` (the token), when it arrived (`time.monotonic()`,
    before its turn) and the path's converted arguments."""

    caller: object  # a request, or a stand-in with its `user` and `auth`
    arrived: float | None
    kwargs: dict


@dataclass(frozen=True)
class _HandOn:
    """Django answers this request (not the caller's machine, a spent budget…); `counted`, if it was counted."""

    counted: Counted | None = None

    def scope(self, scope: dict) -> dict:
        return scope if self.counted is None else {**scope, COUNTED_SCOPE_KEY: self.counted}


@dataclass
class _Plain:
    """What the request says, once it is known to be the plain case."""

    stream: FastStream
    kwargs: dict
    token: str
    secure: bool
    arrived: float = field(default_factory=time.monotonic)


def fast_streams() -> list[FastStream]:
    """The fast streams the ACP apps list (`fast_streams` in their AppConfig)."""
    return list(composition.hooks("fast_streams"))


class FastStreamRouter:
    """ASGI: serve the plain case of the apps' fast streams, pass everything else to `app` (Django).

    Connects are opened in paced batches (`ConnectAdmission`), at most ACP_CHANNEL_CONNECTS_AT_ONCE batches at a
    time, the others waiting their turn in arrival order, so a reconnect storm (a deploy) cannot take every thread
    from the API's requests; one that waited ACP_CHANNEL_CONNECT_QUEUE_WAIT seconds is answered 503 with a
    Retry-After, and its daemon comes back later instead of waiting out its own timeout and retrying into the queue.
    One whose client went away while it waited is not opened.
    """

    def __init__(self, app, streams: list[FastStream]):
        self.app = app
        self.streams = streams
        self._admission: tuple[asyncio.AbstractEventLoop, ConnectAdmission] | None = None

    async def __call__(self, scope, receive, send):
        plain = self._plain(scope) if scope["type"] == "http" and scope["method"] == "GET" else None
        if plain is None:
            return await self.app(scope, receive, send)
        request = await receive()  # read whole by RequestBodyGuard: the connection's next message is its end
        if request["type"] == "http.disconnect":
            return
        gone = asyncio.ensure_future(_disconnected(receive))  # watched from now: one gone while in line is not opened
        try:
            opened = await self._connect_admission().open(plain, gone)
        except Busy as busy:
            gone.cancel()
            return await _busy(send, busy.retry_after)
        except Exception as error:
            gone.cancel()
            if not is_database_outage(error):
                raise
            return await _database_unavailable(send)
        except BaseException:  # cancelled while in line (the server stopping)
            gone.cancel()
            raise
        if not isinstance(opened, tuple):
            gone.cancel()
            if opened is None:
                return  # nobody left to answer
            return await self.app(opened.scope(scope), replaying(request, receive), send)
        stream, usage_headers = opened
        await _serve(stream, _headers(plain, usage_headers), gone, send)

    def _connect_admission(self) -> ConnectAdmission:
        loop = asyncio.get_running_loop()  # one per event loop (a test runs several, one after the other)
        if self._admission is None or self._admission[0] is not loop:
            self._admission = (
                loop,
                ConnectAdmission(
                    at_once=settings.ACP_CHANNEL_CONNECTS_AT_ONCE,
                    per_second=settings.ACP_CHANNEL_CONNECTS_PER_SECOND,
                    queue_wait=settings.ACP_CHANNEL_CONNECT_QUEUE_WAIT,
                    batch=settings.ACP_CHANNEL_CONNECT_BATCH,
                    open_all=_open_all,
                ),
            )
        return self._admission[1]

    def _plain(self, scope) -> _Plain | None:
        for stream in self.streams:
            kwargs = stream.match(scope["path"])
            if kwargs is not None:
                break
        else:
            return None
        if scope.get("query_string"):
            return None
        headers = dict(scope["headers"])  # a repeated header keeps its last value: Django would join them, so…
        if len(headers) != len(scope["headers"]) or any(b"_" in name for name in headers):
            return None  # …it goes to Django, and so does one with "_" in a name (Django reads it as a "-")
        if not _accepts_stream(headers.get(b"accept")):
            return None
        policy = _policy()
        secure = _is_secure(scope, headers, policy)
        if (policy.ssl_redirect and not secure) or not _host_allowed(headers, policy):
            return None
        token = _token(headers)
        return None if token is None else _Plain(stream, kwargs, token, secure)


class Busy(Exception):
    """Refused a turn: come back in `retry_after` seconds."""

    def __init__(self, retry_after: int):
        self.retry_after = retry_after


@dataclass(eq=False)
class _Connect:
    """A connect in line: what it asks to open, its client's end (done: gone), and its outcome once opened."""

    request: object
    gone: asyncio.Future
    outcome: asyncio.Future


@dataclass(eq=False)
class _Batch:
    """Connects opened together when `due` comes (in the loop's time); `first_arrived`: when its first one did."""

    due: float
    first_arrived: float
    connects: list[_Connect] = field(default_factory=list)


class ConnectAdmission:
    """When the connects of one process are opened: in batches of at most `batch` connects in arrival order, at a pace
    of `per_second` connects (0: no pace; a batch of n is due n / `per_second` seconds after the one before it, at
    the earliest), at most `at_once` batches being opened at the same time. A connect that finds no batch filling
    starts one, due at once if the pace allows it: a lone connect is not held back, and the batches fill when connects
    come faster than the pace (a reconnect storm). A batch is opened by `open_all` (the batch's requests → their
    outcomes, each a value or the exception it raised) on one request thread: one hop to the thread, one token lookup
    and one database connection for all its connects, instead of one of each per connect.

    The pace keeps what a reconnect storm (a deploy) takes from the API's requests to a known share of the worker,
    however busy the worker is (taking turns alone let the storm take more of an idle worker, and pass fewer
    connects the busier it was); the batches make that share smaller, since each connect costs less (README, "The
    storm in batches"). A connect whose batch would be due more than `queue_wait` seconds ahead is refused at once
    (`Busy`) and told to come back after the batches already due, at a moment spread over BUSY_RETRY_AFTER beyond
    them, so that the refused do not all come back together, nor before there is room. A batch that waited
    `queue_wait` since its first connect arrived, for a turn, is refused too; a connect whose client went away before
    its batch was opened is not opened (its outcome: None).
    """

    def __init__(self, *, at_once: int, per_second: float, queue_wait: float, batch: int, open_all: Callable):
        self.batch_size = batch
        self.interval = 1 / per_second if per_second > 0 else 0.0
        self.queue_wait = queue_wait
        self._open_all = open_all
        self._turns = asyncio.Semaphore(at_once)
        self._filling: _Batch | None = None
        self._last: _Batch | None = None  # the last batch due, full or already opened
        self._opening: set[asyncio.Task] = set()  # held here: the loop keeps only weak references to tasks

    async def open(self, request, gone: asyncio.Future):
        """`request`'s outcome once its batch was opened (None if its client went away first); `Busy` if refused."""
        loop = asyncio.get_running_loop()
        batch = self._filling or self._next_batch(loop)
        connect = _Connect(request, gone, loop.create_future())
        batch.connects.append(connect)
        if len(batch.connects) >= self.batch_size:
            self._filling = None
        return await connect.outcome

    def _next_batch(self, loop: asyncio.AbstractEventLoop) -> _Batch:
        now = loop.time()
        due = now if self._last is None else max(now, self._last.due + len(self._last.connects) * self.interval)
        if due - now > self.queue_wait:
            taken_ahead = due - now - self.queue_wait
            raise Busy(math.ceil(taken_ahead) + random.randint(*BUSY_RETRY_AFTER))
        self._filling = self._last = batch = _Batch(due, now)
        loop.call_at(due, self._release, batch)
        return batch

    def _release(self, batch: _Batch) -> None:
        if self._filling is batch:
            self._filling = None
        task = asyncio.ensure_future(self._open_batch(batch))
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)

    async def _open_batch(self, batch: _Batch) -> None:
        try:
            async with asyncio.timeout_at(batch.first_arrived + self.queue_wait):
                await self._turns.acquire()
        except TimeoutError:
            for connect in batch.connects:
                _settle(connect, Busy(random.randint(*BUSY_RETRY_AFTER)))
            return
        try:
            waiting = []
            for connect in batch.connects:
                if connect.gone.done():
                    _settle(connect, None)  # nobody left to answer
                elif not connect.outcome.done():  # else cancelled while in line (the server stopping)
                    waiting.append(connect)
            if waiting:
                outcomes = await run_in_background(functools.partial(self._open_all, [c.request for c in waiting]))
                for connect, outcome in zip(waiting, outcomes, strict=True):
                    _settle(connect, outcome)
        except BaseException as error:  # the hop itself failed, or was cancelled (the server stopping)
            for connect in batch.connects:
                _settle(connect, error)
            if not isinstance(error, Exception):
                raise
        finally:
            self._turns.release()


def _settle(connect: _Connect, outcome) -> None:
    """Give `connect` its outcome; one opened for a connect cancelled meanwhile is closed instead."""
    if connect.outcome.done():
        if isinstance(outcome, tuple):
            outcome[0].close()
    elif isinstance(outcome, asyncio.CancelledError):
        connect.outcome.cancel()
    elif isinstance(outcome, BaseException):
        connect.outcome.set_exception(outcome)
    else:
        connect.outcome.set_result(outcome)


def _accepts_stream(accept: bytes | None) -> bool:
    """No Accept, `*/*` or one naming the stream's media type (DRF could refuse others with 406: Django decides)."""
    return accept is None or accept.strip() == b"*/*" or MEDIA_TYPE.encode() in accept


def _token(headers: dict) -> str | None:
    authorization = headers.get(b"authorization")
    if authorization is None:
        raw = headers.get(b"x-api-key")
    else:
        parts = authorization.split()
        if len(parts) != 2 or parts[0].lower() != b"bearer":
            return None
        raw = parts[1]
    try:
        return None if raw is None else raw.decode("ascii").strip()
    except UnicodeDecodeError:
        return None


@dataclass(frozen=True)
class _Policy:
    """The settings a plain connect is checked against, read once (each read of `settings` costs a lookup)."""

    ssl_redirect: bool
    proxy_ssl_header: tuple[bytes, str] | None  # (header name as ASGI spells it, the value that means HTTPS)
    forwarded_host: bool
    allowed_hosts: list[str]
    headers: list[tuple[str, str]]  # what Django's middleware adds to a 200 stream, HSTS aside
    hsts: str | None


@functools.cache
def _policy() -> _Policy:
    proxy_ssl_header = None
    if settings.SECURE_PROXY_SSL_HEADER:
        name, value = settings.SECURE_PROXY_SSL_HEADER
        proxy_ssl_header = (name.removeprefix("HTTP_").lower().replace("_", "-").encode(), value)
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]  # as HttpRequest.get_host
    return _Policy(
        ssl_redirect=settings.SECURE_SSL_REDIRECT,
        proxy_ssl_header=proxy_ssl_header,
        forwarded_host=settings.USE_X_FORWARDED_HOST,
        allowed_hosts=allowed_hosts,
        headers=_middleware_headers(),
        hsts=_hsts(),
    )


def _middleware_headers() -> list[tuple[str, str]]:
    """SecurityMiddleware's and XFrameOptionsMiddleware's headers on a 200 stream (HSTS: `_hsts`)."""
    headers = []
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        policy = settings.SECURE_REFERRER_POLICY
        headers.append(("Referrer-Policy", policy if isinstance(policy, str) else ",".join(policy)))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
    headers.append(("X-Frame-Options", settings.X_FRAME_OPTIONS))
    return headers


def _hsts() -> str | None:
    if not settings.SECURE_HSTS_SECONDS:
        return None
    hsts = f"max-age={settings.SECURE_HSTS_SECONDS}"
    if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
        hsts += "; includeSubDomains"
    if settings.SECURE_HSTS_PRELOAD:
        hsts += "; preload"
    return hsts


def _settings_changed(**kwargs) -> None:
    _policy.cache_clear()


setting_changed.connect(_settings_changed)


def _is_secure(scope, headers: dict, policy: _Policy) -> bool:
    if policy.proxy_ssl_header is not None:
        name, value = policy.proxy_ssl_header
        forwarded = headers.get(name)
        if forwarded is not None:
            return forwarded.split(b",")[0].strip().decode("latin-1") == value
    return scope.get("scheme") == "https"


def _host_allowed(headers: dict, policy: _Policy) -> bool:
    if policy.forwarded_host:
        return False  # Django reads the host elsewhere then: let it
    domain, _port = split_domain_port(headers.get(b"host", b"").decode("latin-1"))
    return bool(domain) and validate_host(domain, policy.allowed_hosts)


def _open_all(plains: list[_Plain]) -> list:
    """On a request thread: open a batch of connects, their tokens looked up in one query, then each stream's
    connects in one call of its opener. Each one's outcome (`_admit`'s, or the opened stream and its rate-limit
    headers), or the exception it raised, raised to that connect alone (to the connects of one opener's call)."""
    keys = [token_key(plain.token) for plain in plains]
    try:
        tokens = tokens_by_hash(key for key in keys if key is not None)
    except Exception as error:
        return [error] * len(plains)
    outcomes: list = [None] * len(plains)
    admitted: dict[FastStream, list[tuple[int, OpenRequest, _HandOn, dict]]] = {}
    for place, (plain, key) in enumerate(zip(plains, keys, strict=True)):
        try:
            outcome = _admit(plain, tokens.get(key))
        except Exception as error:
            outcome = error
        if isinstance(outcome, tuple):
            admitted.setdefault(plain.stream, []).append((place, *outcome))
        else:
            outcomes[place] = outcome
    for stream, connects in admitted.items():
        for (place, *_), outcome in zip(connects, _opened(stream, connects), strict=True):
            outcomes[place] = outcome
    return outcomes


def _admit(plain: _Plain, token):
    """Authenticate (`token`: the one `plain.token` names, looked up, or None), check the scopes and the budget as
    the DRF view's classes do: the connect's `OpenRequest`, what Django is handed if it is not opened and its
    rate-limit headers; or `_HandOn` for Django to answer it now."""
    try:
        user, token = authenticate_found_token(token, touch=False)  # recorded by the open, if it opens
    except AuthenticationFailed:
        return _HandOn()
    view, action = plain.stream.view, plain.stream.action
    if needed_scope(view, action, "GET") not in token.scopes:
        return _HandOn()
    if token.device_id is not None and action not in view.device_token_actions:
        return _HandOn()
    usage = _rate_limit(token, DAEMON if action in view.daemon_actions else API)
    hand_on = _HandOn(None if usage is None else Counted(token.pk, usage))
    if usage is not None and usage.exceeded:
        return hand_on  # Django answers 429
    request = OpenRequest(SimpleNamespace(user=user, auth=token), plain.arrived, plain.kwargs)
    return request, hand_on, ({} if usage is None else usage.headers(time.time()))


def _opened(stream: FastStream, connects: list[tuple[int, OpenRequest, _HandOn, dict]]) -> list:
    """`stream`'s connects opened in one call of its opener: each one's stream, ready to send, and headers; the
    `_HandOn` of one not opened (Django answers 404); or the exception raised."""
    try:
        streams = stream.open([request for _, request, _, _ in connects])
    except Exception as error:
        return [error] * len(connects)
    outcomes = []
    for (_, _, hand_on, headers), opened in zip(connects, streams, strict=True):
        try:
            outcomes.append(hand_on if opened is None else (open_stream(opened), headers))
        except Exception as error:
            outcomes.append(error)
            _forget_connection_if_broken()
    return outcomes


def _forget_connection_if_broken() -> None:
    """After one connect's error, the batch's next connects get a new database connection if this one is broken
    (the hop closes it in any case once the batch is done: `run_released`)."""
    connection.close_if_unusable_or_obsolete()


def _rate_limit(token, bucket: str):
    return token_usage(token, bucket, time.time()) if settings.ACP_RATELIMIT_ENABLED else None


def _headers(plain: _Plain, usage_headers: dict) -> list[tuple[bytes, bytes]]:
    """Django's for this answer: the stream's own, its middleware's, the rate limit's."""
    policy = _policy()
    headers = [("Content-Type", MEDIA_TYPE), *STREAM_HEADERS]
    if plain.secure and policy.hsts:
        headers.append(("Strict-Transport-Security", policy.hsts))
    headers += policy.headers
    headers += usage_headers.items()
    return [(name.lower().encode("latin-1"), str(value).encode("latin-1")) for name, value in headers]


async def _busy(send, retry_after: int) -> None:
    """503 `service_unavailable`, with the Retry-After `ConnectAdmission` chose."""
    message = f"The server is opening many channels at once; retry in {retry_after} s."
    retry = ((b"retry-after", str(retry_after).encode()),)
    await refuse(send, 503, message, "service_unavailable", {"retryAfter": retry_after}, retry)


async def _database_unavailable(send) -> None:
    """503 `service_unavailable` with a Retry-After, as Django answers a database outage (acp/api/errors.py)."""
    unavailable = ServiceUnavailable()
    retry = ((b"retry-after", str(unavailable.wait).encode()),)
    await refuse(send, 503, str(unavailable.detail), unavailable.error_code, {}, retry)


async def _serve(opened: OpenedStream, headers, gone: asyncio.Future, send) -> None:
    """Send the stream until it ends or the client goes away (`gone` is done), then close the body (its subscription
    and presence hold go with it).

    It is sent from the request's own task, which `gone` cancels: a task of its own, and `asyncio.wait` for either,
    held 13 more objects per channel for the cyclic collector to walk, 10,000 times over (README, "The collector in a
    storm")."""
    body = opened.body()
    task = asyncio.current_task()
    sending = True

    def client_left(_gone) -> None:
        if sending:
            task.cancel()

    gone.add_done_callback(client_left)
    try:
        await _pump(body, headers, send)
    except asyncio.CancelledError:
        if not gone.done() or task.uncancel() > 0:
            raise  # cancelled from elsewhere too (the server stopping)
    except OSError:
        pass  # the connection broke while an event went out
    finally:
        sending = False
        gone.cancel()
        await body.aclose()


async def _pump(body: AsyncIterator[bytes], headers, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    async for chunk in body:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
