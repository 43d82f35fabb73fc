"""Event streams against live servers: the stream served by one uvicorn process, events ingested through another."""

import contextlib
import json
import queue
import threading
import time

import httpx
import pytest
from computer_agents import ApiClientError, ComputerAgentsClient

from tests.conftest import make_token
from tests.sessions.conftest import processes  # noqa: F401  (the live-process fixture)
from tests.sessions.live import wait_until
from tests.sessions.test_live import pg_activity

pytestmark = pytest.mark.django_db(transaction=True)

MAX_SECONDS = 4


class StreamReader:
    """Reads one SSE response in a thread: events as (id, data) and comments, in arrival order, and its end.

    `named`: events as (event name, id, data), ids kept as sent (a machine channel's `launch:<uuid>`)."""

    def __init__(self, url, token, *, named=False, **kwargs):
        self.named = named
        self.items: queue.Queue = queue.Queue()
        self.ended = threading.Event()
        self.status = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, token, kwargs), daemon=True)
        self._thread.start()

    def _run(self, url, token, kwargs):
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        try:
            with (
                contextlib.suppress(httpx.HTTPError),
                httpx.stream(  # a cut connection ends the stream too
                    "GET", url, headers=headers, timeout=30, **kwargs
                ) as response,
            ):
                self.status = response.status_code
                event_name = event_id = None
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith(":"):
                        self.items.put(("comment", line[1:].strip()))
                    elif line.startswith("event: "):
                        event_name = line[7:]
                    elif line.startswith("id: "):
                        event_id = line[4:] if self.named else int(line[4:])
                    elif line.startswith("data: "):
                        data = json.loads(line[6:])
                        self.items.put(("event", (event_name, event_id, data) if self.named else (event_id, data)))
                        event_name = event_id = None
        finally:
            self.ended.set()

    def events(self, count, timeout=5.0):
        """The next `count` events (skipping comments), or fail after `timeout`."""
        found, deadline = [], time.monotonic() + timeout
        while len(found) < count:
            try:
                kind, item = self.items.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"got {len(found)} of {count} events in {timeout}s: {found}")
            if kind == "event":
                found.append(item)
        return found

    def comment(self, text, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                kind, item = self.items.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no {text!r} comment within {timeout}s")
            if kind == "comment" and item == text:
                return

    def close(self):
        self._stop.set()


@pytest.fixture
def servers(processes):  # noqa: F811
    env = {"ACP_STREAM_HEARTBEAT": "0.3", "ACP_STREAM_MAX_SECONDS": str(MAX_SECONDS)}
    return processes.start_server("acp-stream", **env), processes.start_server("acp-ingest", **env)


def ingest(server, token, thread, events):
    response = httpx.post(
        f"{server.url}/v1/threads/{thread.id}/events/ingest",
        json={"events": events},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


def outputs(start, stop):
    return [{"type": "output", "data": {"n": n}, "clientEventId": f"o{n}"} for n in range(start, stop)]


def test_backlog_then_live_events_across_processes_heartbeat_and_end(servers, user, device, thread, session):
    stream_server, ingest_server = servers
    token = make_token(user, device=device)
    ingest(ingest_server, token, thread, outputs(1, 4))
    url = f"{stream_server.url}/v1/threads/{thread.id}/events"
    started = time.monotonic()
    # 1 is the server's session.created; outputs 1–3 are 2–4
    reader = StreamReader(url, token, params={"after": 2}, headers={"Accept": "text/event-stream"})
    assert [sequence for sequence, _ in reader.events(2)] == [3, 4]

    ingest(ingest_server, token, thread, outputs(4, 6))
    live = reader.events(2, timeout=2)
    assert [(sequence, event["data"]["n"]) for sequence, event in live] == [(5, 4), (6, 5)]
    assert live[0][1]["threadId"] == str(thread.id) and live[0][1]["source"] == "daemon"
    reader.comment("keepalive", timeout=2)
    assert reader.ended.wait(MAX_SECONDS + 3), "the server did not end the stream"
    assert time.monotonic() - started >= MAX_SECONDS - 0.5
    assert reader.status == 200


def test_a_resumed_stream_delivers_exactly_what_was_missed(servers, user, device, thread, session):
    stream_server, ingest_server = servers
    token = make_token(user, device=device)
    url = f"{stream_server.url}/v1/threads/{thread.id}/events"
    first = StreamReader(url, token, params={"stream": "true", "source": "daemon"})
    ingest(ingest_server, token, thread, outputs(1, 4))
    received = first.events(3)
    first.close()
    ingest(ingest_server, token, thread, outputs(4, 9))  # while disconnected

    last_id = received[-1][0]
    # the original URL (from the start) and the Last-Event-ID header: the header wins
    params = {"stream": "true", "source": "daemon", "after": 0}
    second = StreamReader(url, token, params=params, headers={"Last-Event-ID": str(last_id)})
    resumed = second.events(5)
    assert [sequence for sequence, _ in resumed] == [5, 6, 7, 8, 9]  # 1 is the server's session.created
    assert [event["data"]["n"] for _, event in resumed] == [4, 5, 6, 7, 8]
    ingest(ingest_server, token, thread, outputs(9, 10))
    assert [sequence for sequence, _ in second.events(1, timeout=2)] == [10]
    assert second.items.empty() or all(kind == "comment" for kind, _ in list(second.items.queue))
    second.close()


def test_stream_errors_are_json(servers, user, device, thread, session, other_user):
    stream_server, _ = servers
    token = make_token(user, device=device)
    url = f"{stream_server.url}/v1/threads/{thread.id}/events"
    bad = httpx.get(url, params={"stream": "true", "before": 3}, headers={"Authorization": f"Bearer {token}"})
    assert bad.status_code == 400 and "before" in bad.json()["details"]
    stranger = httpx.get(
        url, headers={"Authorization": f"Bearer {make_token(other_user)}", "Accept": "text/event-stream"}
    )
    assert stranger.status_code == 404 and stranger.headers["content-type"].startswith("application/json")


def test_the_official_sdk_ingests_reads_and_streams(servers, user, device, thread, session):
    stream_server, ingest_server = servers
    device_sdk = ComputerAgentsClient(api_key=make_token(user, device=device), base_url=ingest_server.url, timeout=10)
    reader_sdk = ComputerAgentsClient(api_key=make_token(user), base_url=stream_server.url, timeout=10)
    try:
        sent = [{"type": "output", "sessionId": str(session.id), "data": {"line": f"l{n}"}, "clientEventId": f"s{n}"}
                for n in range(3)]  # fmt: skip
        result = device_sdk.local_bridge.ingest_thread_events(str(thread.id), sent)
        assert result == {"success": True, "eventsProcessed": 3, "persistedCount": 3}
        assert device_sdk.local_bridge.ingest_thread_events(str(thread.id), sent)["persistedCount"] == 0

        page = reader_sdk.threads.get_events(str(thread.id), limit=3)
        assert [e["type"] for e in page["data"]] == ["session.created", "output", "output"] and page["has_more"]
        rest = reader_sdk.threads.get_events(str(thread.id), cursor=page["next_cursor"])
        assert [e["data"]["line"] for e in rest["data"]] == ["l2"] and rest["data"][0]["sequence"] == 4

        streamed = queue.Queue()

        def consume():
            # the client is closed under it at the end of the test
            with contextlib.suppress(httpx.HTTPError, ApiClientError):
                for event in reader_sdk.threads.stream_events(str(thread.id), after="1"):
                    streamed.put(event)

        threading.Thread(target=consume, daemon=True).start()
        assert [streamed.get(timeout=5)["sequence"] for _ in range(3)] == [2, 3, 4]
        device_sdk.local_bridge.ingest_thread_events(str(thread.id), [{"type": "exit", "data": {"code": 0}}])
        live = streamed.get(timeout=3)
        assert (live["sequence"], live["type"], live["data"]) == (5, "exit", {"code": 0})
    finally:
        device_sdk.api.close()
        reader_sdk.api.close()


def test_idle_streams_hold_no_request_thread_and_no_connection(processes, user, device, thread, session):  # noqa: F811
    server = processes.start_server(
        "acp-idle", ACP_REQUEST_THREADS="1", ACP_STREAM_HEARTBEAT="30", ACP_STREAM_MAX_SECONDS="30"
    )
    token = make_token(user, device=device)
    url = f"{server.url}/v1/threads/{thread.id}/events"
    readers = [StreamReader(url, token, params={"stream": "true"}) for _ in range(5)]
    for reader in readers:
        assert reader.events(1)[0][1]["type"] == "session.created"
    # five open streams, one request thread: a plain request is still served at once
    started = time.monotonic()
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code == 200
    assert time.monotonic() - started < 2
    # and none of them keeps a database connection (the process's LISTEN connection has its own name)
    wait_until(lambda: "acp-idle" not in [name for name, _ in pg_activity()], 5, message="no connection of acp-idle")
    ingest(server, token, thread, outputs(1, 2))
    assert all(reader.events(1, timeout=3)[0][0] == 2 for reader in readers)
