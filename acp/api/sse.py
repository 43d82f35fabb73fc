"""Server-Sent Events: serve a DRF view's stream as an async response that holds no thread or connection idle.

The DRF view authenticates, validates and answers errors as usual; to stream, it returns an `EventStreamResponse`
(an `EventStream` to serve), which only `event_stream_view` can send. The wrapper then sends the backlog and every
later event as it commits, woken through `acp.realtime` (NOTIFY from the writer's transaction), with a comment
heartbeat, and ends the stream after `max_seconds`, at once when the server shuts down (clients reconnect and lose
nothing), or when its `fetch` says so (a machine channel replaced).

What to send is the stream's `fetch`, which keeps its own place: `AfterPosition` for numbered events (a thread's
timeline, resumed with `Last-Event-ID`), or pending work not yet sent on this connection (sessions/api/channel.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.http import StreamingHttpResponse
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from acp.db_release import run_released
from acp.realtime import Subscription, recheck_interval, subscribe
from acp.serving.request_threads import released_request_thread, run_in_background
from acp.shutdown import is_shutting_down

MEDIA_TYPE = "text/event-stream"
# Keepalives fall due on this grid (seconds), so those of thousands of idle streams come due together: the event
# loop wakes ten times a second for a few dozen of them, not once for each (bench/channel.py, 10,000 channels:
# one wake-up each, the prepares beside them cost 3.9-5.4 ms of CPU a request against 3.5 without them and holding
# the channels took 0.050 of a core; on the grid 3.9 against 3.4-3.7, and 0.022).
HEARTBEAT_GRID = 0.1


class EventStreamRenderer(BaseRenderer):
    """Lets DRF accept `Accept: text/event-stream`; the body itself is written by `event_stream_view`."""

    media_type = MEDIA_TYPE
    format = "sse"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return JSONRenderer().render(data, renderer_context=renderer_context)


def wants_stream(request, stream_param: bool | None) -> bool:
    """`stream=true`, or no `stream` parameter and an Accept header naming the SSE media type."""
    if stream_param is not None:
        return stream_param
    return MEDIA_TYPE in request.headers.get("Accept", "")


@dataclass(frozen=True)
class Message:
    """One SSE event: `data` (JSON text), with its `id` (the client's Last-Event-ID) and its `event` name, if any."""

    data: str
    id: str | None = None
    event: str | None = None  # None: a plain `message`

    def encode(self) -> bytes:
        event = f"event: {self.event}\n" if self.event else ""
        event_id = f"id: {self.id}\n" if self.id is not None else ""
        return f"{event}{event_id}data: {self.data}\n\n".encode()


@dataclass
class Batch:
    """What one `fetch` found."""

    messages: list[Message]
    more: bool = False  # a full page: fetch again at once instead of waiting
    last: bool = False  # end the stream after these (e.g. the channel was replaced)


@dataclass
class EventStream:
    key: str  # the acp.realtime key the writers notify
    fetch: Callable[[], Batch]  # what to send next; keeps its own place (a position, the ids sent). A worker thread.
    heartbeat: float
    max_seconds: float
    limit: int | None = None  # end after this many events
    while_open: AbstractContextManager = field(default_factory=contextlib.nullcontext)  # held for the stream's life
    # Seconds between timer re-checks while the listener is up (a last resort; None: ACP_LONG_POLL_RECHECK).
    recheck: float | None = None
    # Subscribed to `key` already, before whatever the first fetch relies on was read (else `open_stream` does).
    subscription: Subscription | None = None


class AfterPosition:
    """The `fetch` of a stream of numbered events (a timeline): each time, the page after the last position sent.

    `fetch(after)` returns [(position, JSON text)] in order, at most `page_size` (fewer: caught up).
    """

    def __init__(self, fetch: Callable[[int], list[tuple[int, str]]], *, after: int, page_size: int):
        self._fetch = fetch
        self.after = after
        self.page_size = page_size

    def __call__(self) -> Batch:
        rows = self._fetch(self.after)
        if rows:
            self.after = rows[-1][0]
        messages = [Message(payload, id=str(position)) for position, payload in rows]
        return Batch(messages, more=len(rows) >= self.page_size)


class EventStreamViewMixin:
    """A DRF view that may answer a stream: it accepts `Accept: text/event-stream`, and its errors stay JSON."""

    renderer_classes = [JSONRenderer, EventStreamRenderer]

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if isinstance(getattr(response, "accepted_renderer", None), EventStreamRenderer):
            response.accepted_renderer = JSONRenderer()  # errors (and pages) are JSON whatever was asked
            response.accepted_media_type = "application/json"
        return response


class EventStreamResponse(Response):
    """A DRF view's answer "stream this"; only `event_stream_view` can serve it."""

    def __init__(self, stream: EventStream):
        super().__init__()
        self.stream = stream

    @property
    def rendered_content(self):
        raise ImproperlyConfigured("An EventStreamResponse must be served through acp.api.sse.event_stream_view.")


# What a stream's answer carries besides its media type, in every serving path (acp/serving/fast_streams.py too).
STREAM_HEADERS = (("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no"))  # a proxy must pass each event at once


def event_stream_view(drf_view):
    """Wrap `drf_view` (from `.as_view()`): an `EventStreamResponse` becomes a `text/event-stream`."""

    @functools.wraps(drf_view)
    async def view(request, *args, **kwargs):
        opened = await sync_to_async(run_released)(lambda: _open_response(drf_view(request, *args, **kwargs)))
        if not isinstance(opened, OpenedStream):
            return opened
        streaming = StreamingHttpResponse(opened.body(), content_type=MEDIA_TYPE)
        for name, value in STREAM_HEADERS:
            streaming[name] = value
        return streaming

    return view


@dataclass
class OpenedStream:
    """A stream subscribed to its key, with its first batch fetched: ready to send."""

    stream: EventStream
    subscription: Subscription
    backlog: Batch

    def close(self) -> None:
        """Let go of a stream that will not be sent (its connect was cancelled while it opened)."""
        self.subscription.close()

    def body(self) -> AsyncIterator[bytes]:
        events = _events(self.stream, self.subscription, self.backlog)
        weakref.finalize(events, self.subscription.close)  # also when the body is dropped before it starts
        return events


def open_stream(stream: EventStream) -> OpenedStream:
    """Subscribe, then fetch the first batch (nothing committed in between is missed), in the caller's thread and on
    its database connection: one thread hop and one connection for the whole connect."""
    subscription = stream.subscription or subscribe(stream.key)
    try:
        return OpenedStream(stream, subscription, stream.fetch())
    except BaseException:
        subscription.close()
        raise


def _open_response(response):
    return open_stream(response.stream) if isinstance(response, EventStreamResponse) else response


def _next_heartbeat(now: float, interval: float) -> float:
    """`interval` from `now`, rounded up to the grid."""
    return math.ceil((now + interval) / HEARTBEAT_GRID) * HEARTBEAT_GRID


@dataclass
class _Schedule:
    deadline: float
    next_heartbeat: float
    ended: bool = False


async def _events(stream: EventStream, subscription: Subscription, batch: Batch) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    now = loop.time()
    schedule = _Schedule(deadline=now + stream.max_seconds, next_heartbeat=_next_heartbeat(now, stream.heartbeat))
    sent = 0
    async with released_request_thread():
        try:
            with stream.while_open:
                yield b": connected\n\n"  # the client has its headers at once
                while True:
                    for message in batch.messages:
                        yield message.encode()
                        sent += 1
                        if stream.limit is not None and sent >= stream.limit:
                            return
                    if batch.last:
                        return
                    if batch.more:
                        if loop.time() >= schedule.deadline:  # a run of full pages still ends in time
                            return
                    else:
                        async for keepalive in _quiet(stream, subscription, schedule):
                            yield keepalive
                        if schedule.ended:
                            return
                    batch = await run_in_background(stream.fetch)
        finally:
            subscription.close()


async def _quiet(stream: EventStream, subscription: Subscription, schedule: _Schedule) -> AsyncIterator[bytes]:
    """Wait until a writer wakes the stream or its re-check is due (then the caller fetches), sending the keepalives
    that fall due meanwhile. A keepalive costs no fetch: 2,000 idle streams fetching at each of theirs took most of
    a worker's CPU (bench/run.py idle-streams). Sets `schedule.ended` at the deadline or when the server shuts down
    (a deploy: end cleanly, the client resumes elsewhere)."""
    loop = asyncio.get_running_loop()
    recheck_at = loop.time() + recheck_interval(stream.recheck)
    while True:
        now = loop.time()
        if now >= schedule.deadline or is_shutting_down():
            schedule.ended = True
            return
        if now >= schedule.next_heartbeat:
            yield b": keepalive\n\n"
            schedule.next_heartbeat = _next_heartbeat(now, stream.heartbeat)
        if now >= recheck_at:
            return
        if await subscription.wait(min(schedule.deadline, schedule.next_heartbeat, recheck_at) - now):
            return
