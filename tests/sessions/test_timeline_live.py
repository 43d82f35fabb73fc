"""The reference daemon's part of the timeline, end to end: its agent's output and exit, and an outage survived."""

import contextlib
import threading

import httpx
import pytest

from acp.daemon.client import Api
from acp.daemon.events import EventForwarder
from commands.models import ThreadEvent
from commands.services import local_session_create, thread_create
from tests.conftest import make_token
from tests.sessions.live import connections_sampled, wait_until
from tests.sessions.test_live import bearer, launch_session, send_command

pytestmark = pytest.mark.django_db(transaction=True)


def timeline(thread_id):
    events = list(ThreadEvent.objects.filter(thread_id=thread_id).order_by("sequence"))
    assert [event.sequence for event in events] == list(range(1, len(events) + 1))
    return events


def test_launch_pause_resume_message_cancel_over_one_connection_reads_as_one_timeline(
    processes, user, workspace, device
):
    server = processes.start_server(access_log=True)
    token = make_token(user)
    daemon = processes.start_daemon(server, make_token(user, device=device), "--device", str(device.id))
    wait_until(lambda: "machine channel open" in daemon.log(), 20, message="the daemon to open its channel")
    with connections_sampled(daemon.popen.pid, server.port) as connections:
        thread_id, session_id = round_trip(processes, server, token, workspace)

    # one channel carried the launch and the commands; acks, heartbeats and events shared one more connection
    assert 1 <= max(connections) <= 2, connections
    assert server.requests("GET", f"/api/v1/machines/{device.id}/stream") == 1
    assert server.requests("GET", f"/api/v1/machines/{device.id}/launches") == 0
    assert "/control/poll" not in server.log()
    assert_timeline_of_a_round_trip(thread_id, session_id)


def round_trip(processes, server, token, workspace) -> tuple[str, str]:
    """Launch a session, pause, resume and message it, then cancel it, while a client streams its output."""
    answer = launch_session(server, token, workspace, {"initial_prompt": "hello timeline"}).json()
    assert answer["status"] == "ok", answer
    payload = answer["payload"]
    processes.agent_pids.add(payload["pid"])
    thread_id, session_id = payload["thread_id"], payload["local_session_id"]

    # the agent's first lines reach a streaming client
    lines = []

    def stream():
        with contextlib.suppress(httpx.HTTPError):  # the server is stopped under it at the end
            read_stream()

    def read_stream():
        url = f"{server.url}/v1/threads/{thread_id}/events"
        with httpx.stream("GET", url, params={"stream": "true", "type": "output"}, headers=bearer(token)) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    lines.append(httpx.Response(200, content=line[6:]).json()["data"]["line"])

    threading.Thread(target=stream, daemon=True).start()
    wait_until(lambda: any("prompt: hello timeline" in line for line in lines), 10, message="the prompt's echo")

    for command_type, body in [("pause", None), ("resume", None), ("message", {"text": "hi agent"})]:
        assert send_command(server, token, thread_id, session_id, command_type, body)["status"] == "completed"
    wait_until(lambda: any("message: hi agent" in line for line in lines), 5, message="the message's echo, streamed")
    assert send_command(server, token, thread_id, session_id, "cancel")["status"] == "completed"
    wait_until(
        lambda: ThreadEvent.objects.filter(thread_id=thread_id, type="exit").exists(), 15, message="the exit event"
    )
    return thread_id, session_id


def assert_timeline_of_a_round_trip(thread_id, session_id):
    events = timeline(thread_id)
    server_types = [e.type for e in events if e.source == "server"]
    per_command = ["command.queued", "command.acknowledged", "command.completed"]
    assert server_types == [
        "launch.requested", "session.created", "launch.acknowledged",
        *per_command, "session.paused",
        *per_command, "session.resumed",
        *per_command,
        *per_command, "session.ended",
    ]  # fmt: skip
    daemon = [e for e in events if e.source == "daemon"]
    assert all(str(e.session_id) == session_id and e.client_event_id for e in daemon)
    outputs = [e.data["line"] for e in daemon if e.type == "output"]
    assert [i for i, line in enumerate(outputs) if "prompt: hello timeline" in line or "message: hi agent" in line]
    assert outputs.index(next(x for x in outputs if "prompt:" in x)) < outputs.index(
        next(x for x in outputs if "message: hi agent" in x)
    )
    (exit_event,) = [e for e in daemon if e.type == "exit"]
    assert exit_event.data["code"] is not None
    # the agent's echo of the message comes after the server recorded the message queued
    queued_message = next(e for e in events if e.type == "command.queued" and e.data["commandType"] == "message")
    echoed = next(e for e in daemon if e.type == "output" and "message: hi agent" in e.data["line"])
    assert queued_message.sequence < echoed.sequence


def test_an_outage_loses_nothing_that_fits_the_buffer_and_says_what_it_dropped(processes, user, device):
    thread = thread_create(user=user, title="outage")
    session = local_session_create(user=user, thread=thread, device=device, status="running")
    server = processes.start_server("acp-before")
    stopping = threading.Event()
    api = Api(server.url, make_token(user, device=device), stopping, min_backoff=0.1, max_backoff=0.5)
    forwarder = EventForwarder(api, str(thread.id), str(session.id), flush_interval=0.05, max_buffered=5)
    try:
        forwarder.output("stdout", "before the outage")
        wait_until(lambda: ThreadEvent.objects.filter(type="output").exists(), 10, message="the first line")
        server.stop()
        for n in range(8):  # 3 more than the buffer holds
            forwarder.output("stdout", f"during {n}")
        processes.start_server("acp-after", port=server.port)
        assert forwarder.close(timeout=20), "events were left unsent"
    finally:
        stopping.set()

    daemon = [(e.type, e.data) for e in timeline(thread.id) if e.source == "daemon"]
    assert daemon == [
        ("output", {"stream": "stdout", "line": "before the outage"}),
        ("gap", {"dropped": 3}),
        *[("output", {"stream": "stdout", "line": f"during {n}"}) for n in range(3, 8)],
    ]
