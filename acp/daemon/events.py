"""A session's timeline events, from the daemon to `POST /v1/threads/{id}/events/ingest`: batched, in order, and
kept through an outage.

`add` never blocks and never talks to the server: a sender thread sends what is queued in batches (within
`flush_interval` of the first queued event), each event with a `clientEventId`, so a batch resent after an
outage (or a lost answer) is stored once. At most `max_buffered` events wait; beyond that the oldest are dropped
and a `gap` event, sent in their place, says how many.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from datetime import UTC, datetime

from acp.daemon.client import Api, Stopped, Unauthorized, Unavailable

logger = logging.getLogger("acp.daemon.events")

MAX_LINE_CHARS = 8000  # an output line longer than this is sent in pieces (the server caps an event's size)


class EventForwarder:
    def __init__(
        self,
        api: Api,
        thread_id: str,
        session_id: str,
        *,
        flush_interval: float = 0.2,
        max_buffered: int = 10_000,
        batch_size: int = 200,
        min_backoff: float = 0.5,
        max_backoff: float = 10.0,
    ):
        self.api = api
        self.path = f"/v1/threads/{thread_id}/events/ingest"
        self.session_id = session_id
        self.flush_interval = flush_interval
        self.max_buffered = max_buffered
        self.batch_size = batch_size
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self._ids = itertools.count(1)
        self._pending: deque[dict] = deque()  # oldest first, at most max_buffered
        self._sending: list[dict] = []  # the batch in flight (back to the front of _pending if it fails)
        self._dropped = 0
        self._condition = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"events-{session_id[:8]}", daemon=True)
        self._thread.start()

    def add(self, event_type: str, data: dict) -> None:
        event = {
            "type": event_type,
            "sessionId": self.session_id,
            "data": data,
            "occurredAt": datetime.now(UTC).isoformat(),
        }
        with self._condition:
            event["clientEventId"] = self._next_id()
            self._pending.append(event)
            self._trim()
            self._condition.notify()

    def _trim(self) -> None:
        """Drop the oldest events beyond `max_buffered` (an unsent gap, not counted, folds into the next one)."""
        gap = self._pending.popleft() if self._pending and self._pending[0]["type"] == "gap" else None
        while len(self._pending) > self.max_buffered:
            self._pending.popleft()
            self._dropped += 1
        if gap is not None:
            if self._dropped:
                self._dropped += gap["data"]["dropped"]
            else:
                self._pending.appendleft(gap)

    def output(self, stream: str, line: str) -> None:
        """One line the agent wrote to `stream` (stdout or stderr); a very long one in pieces."""
        for start in range(0, max(len(line), 1), MAX_LINE_CHARS):
            self.add("output", {"stream": stream, "line": line[start : start + MAX_LINE_CHARS]})

    def close(self, timeout: float) -> bool:
        """Send what is queued (for at most `timeout` seconds) and stop; True when nothing was left unsent."""
        with self._condition:
            self._closing = True
            self._condition.notify()
        self._thread.join(timeout)
        with self._condition:
            return not self._pending and not self._sending and not self._dropped

    def _next_id(self) -> str:
        return f"{self.session_id}:{next(self._ids)}"

    def _take_batch(self) -> list[dict] | None:
        """The next batch (a `gap` first, if events were dropped), once one is due; None when closed and empty."""
        with self._condition:
            while not self._pending and not self._dropped:
                if self._closing:
                    return None
                self._condition.wait()
            # let a burst of lines share one request, sent at most flush_interval after its first line
            deadline = time.monotonic() + self.flush_interval
            while not self._closing and len(self._pending) < self.batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            if self._dropped:
                gap = {"type": "gap", "sessionId": self.session_id, "data": {"dropped": self._dropped}}
                self._pending.appendleft({**gap, "clientEventId": self._next_id()})
                self._dropped = 0
            self._sending = [self._pending.popleft() for _ in range(min(self.batch_size, len(self._pending)))]
            return self._sending

    def _run(self) -> None:
        backoff = self.min_backoff
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            try:
                response = self.api.post(self.path, {"events": batch}, retry=False)
            except (Stopped, Unauthorized):
                return
            except Unavailable as exc:
                with self._condition:
                    self._pending.extendleft(reversed(self._sending))
                    self._sending = []
                    self._trim()
                    logger.warning("events: %s; %d queued, retrying in %.1fs", exc, len(self._pending), backoff)
                    if self._closing:
                        return  # a daemon that is stopping does not wait for a server that is down
                    self._condition.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = self.min_backoff
            if response.status_code != 200:  # refused: resending it cannot help
                logger.warning("events: HTTP %s %s; %d dropped", response.status_code, response.text[:200], len(batch))
            with self._condition:
                self._sending = []
