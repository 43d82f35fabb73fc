"""The reference daemon on the machine channel, against real servers: replaced, falling back, reconnecting.

(Its full launch → pause → resume → message → cancel round trip over one connection is in test_timeline_live.py.)
"""

import os
import signal

import httpx
import pytest

from commands.models import ControlCommand, LocalSession
from commands.services import command_enqueue
from tests.conftest import make_token
from tests.sessions.live import process_state, wait_until
from tests.sessions.test_live import bearer, launch_session, send_command
from tests.sessions.test_timeline_live import assert_timeline_of_a_round_trip, round_trip, timeline

pytestmark = pytest.mark.django_db(transaction=True)

OLDER_SERVER = "tests.sessions.older_server"  # settings of a server without the channel (its stream path: 404)


def start_session(processes, server, user, workspace) -> dict:
    """Launch a session through the daemon; the launch's payload (pid, thread and session ids)."""
    answer = launch_session(server, make_token(user), workspace).json()
    assert answer["status"] == "ok", answer
    processes.agent_pids.add(answer["payload"]["pid"])
    return answer["payload"]


def test_a_second_channel_for_its_machine_stops_the_daemon_and_its_agent(processes, user, workspace, device):
    server = processes.start_server()
    device_token = make_token(user, device=device)
    daemon = processes.start_daemon(server, device_token, "--device", str(device.id))
    session = start_session(processes, server, user, workspace)

    headers = {**bearer(device_token), "Accept": "text/event-stream"}
    with httpx.stream("GET", f"{server.url}/api/v1/machines/{device.id}/stream", headers=headers) as other:
        assert other.status_code == 200
        assert daemon.popen.wait(15) == 3  # it stopped instead of taking the channel back

    assert "another daemon opened the channel" in daemon.log()
    assert process_state(session["pid"]) is None
    assert LocalSession.objects.get(pk=session["local_session_id"]).status == "cancelled"


@pytest.mark.parametrize("no_channel", [False, True], ids=["older-server", "--no-channel"])
def test_without_the_channel_the_daemon_long_polls_as_before(processes, user, workspace, device, no_channel):
    # without --no-channel: a server from before the channel, whose stream path answers 404
    settings = {} if no_channel else {"DJANGO_SETTINGS_MODULE": OLDER_SERVER}
    server = processes.start_server(access_log=True, **settings)
    options = ["--no-channel"] if no_channel else []
    daemon = processes.start_daemon(server, make_token(user, device=device), "--device", str(device.id), *options)

    thread_id, session_id = round_trip(processes, server, make_token(user), workspace)

    assert_timeline_of_a_round_trip(thread_id, session_id)
    assert server.requests("GET", f"/api/v1/machines/{device.id}/launches?") >= 1
    assert server.requests("GET", f"/v1/threads/{thread_id}/local-sessions/{session_id}/control/poll?") >= 1
    assert server.requests("GET", f"/api/v1/machines/{device.id}/stream") == (0 if no_channel else 1)
    assert ("long-polling instead" in daemon.log()) is not no_channel


def test_after_a_server_restart_the_new_channel_brings_the_pending_command_once_and_the_next(
    processes, user, workspace, device
):
    server = processes.start_server("acp-first")
    daemon = processes.start_daemon(server, make_token(user, device=device), "--device", str(device.id))
    session = start_session(processes, server, user, workspace)
    server.stop()  # a deploy: the channel ends with the process
    pending = command_enqueue(
        session=LocalSession.objects.get(pk=session["local_session_id"]),
        command_type="message",
        payload={"text": "sent during the outage"},
    )

    again = processes.start_server("acp-second", port=server.port)
    wait_until(
        lambda: ControlCommand.objects.get(pk=pending.pk).status == "completed", 15, message="the pending command"
    )
    thread_id, session_id = session["thread_id"], session["local_session_id"]
    assert send_command(again, make_token(user), thread_id, session_id, "pause")["status"] == "completed"

    acknowledged = [
        e for e in timeline(thread_id) if e.type == "command.acknowledged" and e.data["commandId"] == str(pending.pk)
    ]
    assert len(acknowledged) == 1
    assert daemon.log().count("message: sent during the outage") == 1  # the agent got it once
    assert daemon.log().count("machine channel open") >= 2


def test_a_silent_channel_is_taken_for_dead_and_reopened(processes, user, workspace, device):
    server = processes.start_server(ACP_STREAM_HEARTBEAT=0.2)
    daemon = processes.start_daemon(
        server, make_token(user, device=device), "--device", str(device.id), "--channel-timeout", "1"
    )
    wait_until(lambda: "machine channel open" in daemon.log(), 20, message="the daemon to open its channel")
    os.kill(server.popen.pid, signal.SIGSTOP)  # the connection stays up, but nothing comes through it
    try:
        wait_until(lambda: "machine channel lost (ReadTimeout" in daemon.log(), 10, message="the silence noticed")
    finally:
        os.kill(server.popen.pid, signal.SIGCONT)
    start_session(processes, server, user, workspace)  # and served through the reopened channel
    assert daemon.log().count("machine channel open") >= 2


def test_a_daemon_that_fell_back_takes_the_channel_once_the_server_has_it(processes, user, workspace, device):
    older = processes.start_server("acp-older", DJANGO_SETTINGS_MODULE=OLDER_SERVER)
    daemon = processes.start_daemon(
        older, make_token(user, device=device), "--device", str(device.id), "--channel-retry", "1", "--wait", "1"
    )
    session = start_session(processes, older, user, workspace)  # through the long-polls
    assert "long-polling instead" in daemon.log()
    older.stop()

    upgraded = processes.start_server("acp-upgraded", port=older.port, access_log=True)  # a deploy of the new version
    wait_until(lambda: "machine channel open" in daemon.log(), 15, message="the daemon to take the channel")
    thread_id, session_id = session["thread_id"], session["local_session_id"]
    assert send_command(upgraded, make_token(user), thread_id, session_id, "pause")["status"] == "completed"
    assert upgraded.requests("GET", f"/v1/threads/{thread_id}/local-sessions/{session_id}/control/poll?") <= 2
    assert upgraded.requests("GET", f"/api/v1/machines/{device.id}/launches?") <= 1  # the one under way, if any
