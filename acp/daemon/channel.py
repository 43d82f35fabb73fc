"""The machine channel's wire format: Server-Sent Events read from the lines of a `text/event-stream` body.

`GET /api/v1/machines/{id}/stream` sends `event: launch` / `event: command` (`id:` a cursor, `data:` the JSON
the launch and control polls return), comments as keepalives, and a last `event: replaced` when another daemon
took the machine's channel.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

MEDIA_TYPE = "text/event-stream"


@dataclass(frozen=True)
class ServerEvent:
    event: str
    data: str
    id: str | None  # the last event id the stream set (what a reconnect sends as Last-Event-ID)


def parse_events(lines: Iterable[str]) -> Iterator[ServerEvent]:
    """The events in `lines` (a stream's lines, without their line ends), as the SSE specification reads them:
    comments skipped, `data` lines joined, dispatched at a blank line; an event cut off by the stream's end is
    dropped."""
    event, data, last_id = "", [], None
    for line in lines:
        if not line:
            if data:
                yield ServerEvent(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            last_id = value


def is_event_stream(response) -> bool:
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    return response.status_code == 200 and content_type == MEDIA_TYPE


class SeenIds:
    """Ids already handled, each remembered for `memory` seconds: a channel re-delivers what is still pending (and
    a poll may bring what the channel brought). Safe to share between threads."""

    def __init__(self, memory: float):
        self.memory = memory
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_sight(self, item_id: str) -> bool:
        now = time.monotonic()
        with self._lock:
            self._seen = {k: t for k, t in self._seen.items() if now - t < self.memory}
            if item_id in self._seen:
                return False
            self._seen[item_id] = now
            return True
