"""The reference daemon's side of the machine channel that needs no server: reading SSE bytes, and its backoff."""

import random
import socket
import statistics
import threading
import time

import httpx
import pytest

from acp.daemon.channel import SeenIds, ServerEvent, is_event_stream, parse_events
from acp.daemon.client import Api, Backoff, Stopped


def events_of(body: bytes) -> list[ServerEvent]:
    """The events the daemon reads from `body`, through httpx's own line splitting (as on the wire)."""
    return list(parse_events(httpx.Response(200, content=body).iter_lines()))


def test_launches_and_commands_are_read_with_their_ids_and_comments_are_skipped():
    body = (
        b": connected\n\n"
        b'event: launch\nid: launch:1\ndata: {"id": "1"}\n\n'
        b": keepalive\n\n"
        b'event: command\r\nid: command:2\r\ndata: {"id": "2",\r\ndata:  "sessionId": "s"}\r\n\r\n'
        b'event: replaced\ndata: {"machine_id": "m"}\n\n'
    )
    assert events_of(body) == [
        ServerEvent("launch", '{"id": "1"}', "launch:1"),
        ServerEvent("command", '{"id": "2",\n "sessionId": "s"}', "command:2"),
        ServerEvent("replaced", '{"machine_id": "m"}', "command:2"),  # the last id seen: the reconnect's cursor
    ]


def test_an_event_cut_off_by_the_end_of_the_stream_is_not_taken():
    assert events_of(b'event: launch\nid: launch:1\ndata: {"id": "1"}\n\nevent: launch\ndata: {"id": "2"}\n') == [
        ServerEvent("launch", '{"id": "1"}', "launch:1")
    ]


def test_only_a_200_text_event_stream_is_a_channel():
    assert is_event_stream(httpx.Response(200, headers={"Content-Type": "text/event-stream; charset=utf-8"}))
    assert not is_event_stream(httpx.Response(200, json={"data": []}))
    assert not is_event_stream(httpx.Response(404, headers={"Content-Type": "text/event-stream"}))


def test_a_redelivered_id_is_seen_once():
    seen = SeenIds(memory=600)
    assert [seen.first_sight(i) for i in ("a", "b", "a")] == [True, True, False]


def test_backoff_is_bounded_grows_and_starts_over():
    backoff = Backoff(0.5, 10.0, random.Random(1))
    pauses = [backoff.next() for _ in range(200)]
    assert all(0.5 <= pause <= 10.0 for pause in pauses)
    assert pauses[0] <= 1.5 and max(pauses) > 5  # starts near the minimum, reaches toward the cap
    assert 0 <= backoff.after_clean_end() <= 0.5 and backoff.next() <= 1.5  # after a clean end it starts over


def busiest_share(times: list[float], width: float) -> float:
    """The largest share of `times` that falls in one window `width` seconds wide."""
    times = sorted(times)
    most, first = 0, 0
    for last, moment in enumerate(times):
        while moment - times[first] > width:
            first += 1
        most = max(most, last - first + 1)
    return most / len(times)


def test_daemons_that_lost_the_server_together_do_not_come_back_in_lockstep():
    daemons = [Backoff(0.5, 10.0) for _ in range(1000)]
    arrivals = [0.0] * len(daemons)
    for attempt in range(8):  # each daemon's n-th reconnect after they all lost the server at t=0
        arrivals = [at + backoff.next() for at, backoff in zip(arrivals, daemons, strict=True)]
        assert busiest_share(arrivals, 0.1) < 0.15, attempt  # lockstep would be 100 % in one window
    assert statistics.pstdev(arrivals) > 5
    ends = [backoff.after_clean_end() for backoff in daemons]  # a deploy ends every channel in the same instant
    assert busiest_share(ends, 0.05) < 0.2


def test_retry_after_is_honoured_and_spread():
    backoff = Backoff(0.5, 10.0)
    pauses = [backoff.retry_after(5) for _ in range(1000)]
    assert all(5 <= pause <= 6.25 for pause in pauses)
    assert statistics.pstdev(pauses) > 0.2


def test_a_cancelled_request_stops_retrying_an_unreachable_server_at_once():
    # Nothing listens on the port: every attempt is refused, and the next would come after a 5 s pause.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    stopping, cancel = threading.Event(), threading.Event()
    api = Api(url, "token", stopping, min_backoff=5.0, max_backoff=5.0)
    threading.Timer(0.2, cancel.set).start()
    backstop = threading.Timer(8.0, stopping.set)  # without `cancel` it would retry until the daemon stops
    backstop.start()
    started = time.monotonic()
    with pytest.raises(Stopped):
        api.post("/api/v1/machines/m/launches/l/ack", {"status": "ok"}, cancel=cancel)
    assert time.monotonic() - started < 2.5  # not the pause's 5 s (waited in 0.1 s steps)
    assert not stopping.is_set()  # the daemon's own stop is another matter: only this request gave up
    backstop.cancel()
    api.close()
