"""End to end, with real processes: uvicorn serving the API on the test database, and the reference daemon."""

import threading
import time

import httpx
import pytest
from django.db import connection
from django.utils import timezone

from acp.models import Device
from commands.models import ControlCommand, LocalSession
from sessions.choices import LaunchStatus
from sessions.models import Launch, Workspace
from tests.conftest import make_token
from tests.sessions.live import process_state, wait_for_waiters, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def launch_session(server, token, workspace, body=None, timeout=30.0) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/v1/workspaces/{workspace.id}/sessions",
        json=body or {},
        headers=bearer(token),
        timeout=timeout,
    )


def send_command(server, token, thread_id, session_id, command_type, payload=None) -> dict:
    """Queue a control command and wait until the daemon has acknowledged it completed (or cancelled)."""
    base = f"{server.url}/v1/threads/{thread_id}/local-sessions/{session_id}/control"
    created = httpx.post(
        base, json={"commandType": command_type, "payload": payload or {}}, headers=bearer(token), timeout=10
    )
    assert created.status_code == 201, created.text
    command_id = created.json()["command"]["id"]

    def finished():
        command = httpx.get(f"{base}/{command_id}", headers=bearer(token), timeout=10).json()["command"]
        return command if command["status"] in ("completed", "cancelled") else None

    return wait_until(finished, 15, 0.1, f"the daemon to finish {command_type}")


def pg_activity():
    """Other connections to the test database: (application_name, state)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT application_name, state FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchall()


def test_the_daemon_runs_a_launch_through_pause_resume_message_and_cancel(processes, user, project):
    server = processes.start_server()
    token = make_token(user)
    daemon = processes.start_daemon(server, token, "--name", "e2e-machine")

    # The daemon registers its device with the user token and heartbeats it.
    device = wait_until(
        lambda: Device.objects.filter(user=user, name="e2e-machine", last_seen_at__isnull=False).first(),
        20,
        0.1,
        "the daemon to register and heartbeat",
    )
    assert device.is_online() and device.daemon_version and device.capabilities["launch"] is True
    workspace = Workspace.objects.create(user=user, name="e2e", project=project, default_machine=device)

    response = launch_session(server, token, workspace, {"initial_prompt": "hello from the test"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "ok"
    payload = answer["payload"]
    processes.agent_pids.add(payload["pid"])
    launch = Launch.objects.get(pk=payload["launch_id"])
    assert launch.status == LaunchStatus.ACKNOWLEDGED
    session = LocalSession.objects.get(pk=payload["local_session_id"])
    assert str(session.thread_id) == payload["thread_id"] and session.device == device
    thread_id, session_id, pid = payload["thread_id"], payload["local_session_id"], payload["pid"]
    wait_until(lambda: "prompt: hello from the test" in daemon.log(), 10, message="the agent to echo the prompt")

    paused = send_command(server, token, thread_id, session_id, "pause")
    assert paused["status"] == "completed"
    assert process_state(pid) == "T"  # stopped

    resumed = send_command(server, token, thread_id, session_id, "resume")
    assert resumed["status"] == "completed"
    assert process_state(pid) not in ("T", None)

    messaged = send_command(server, token, thread_id, session_id, "message", {"text": "hi there, agent"})
    assert messaged["status"] == "completed"
    wait_until(lambda: "message: hi there, agent" in daemon.log(), 10, message="the agent to echo the message")

    # The daemon reports the running session's heartbeats (every second here).
    wait_until(
        lambda: LocalSession.objects.filter(pk=session_id, last_heartbeat_at__isnull=False).exists(),
        10,
        message="a session heartbeat",
    )

    cancelled = send_command(server, token, thread_id, session_id, "cancel")
    assert cancelled["status"] == "completed"
    wait_until(lambda: process_state(pid) is None, 10, message="the agent to end")
    session.refresh_from_db()
    assert session.status == "cancelled" and session.completed_at is not None
    statuses = ControlCommand.objects.filter(session=session).values_list("command_type", "status")
    assert sorted(statuses) == sorted(
        [("pause", "completed"), ("resume", "completed"), ("message", "completed"), ("cancel", "completed")]
    )
    assert daemon.alive()


def test_a_launch_posted_to_one_server_is_acknowledged_through_another(processes, user, workspace, device):
    server_a = processes.start_server("acp-server-a")
    server_b = processes.start_server("acp-server-b")
    processes.start_daemon(server_b, make_token(user, device=device), "--device", str(device.id))

    started = time.monotonic()
    response = launch_session(server_a, make_token(user), workspace, {"initial_prompt": "across processes"})
    assert response.status_code == 200, response.text
    payload = response.json()["payload"]
    processes.agent_pids.add(payload["pid"])
    assert response.json()["status"] == "ok" and payload["local_session_id"]
    assert time.monotonic() - started < 5
    launch = Launch.objects.get(pk=payload["launch_id"])
    assert launch.status == LaunchStatus.ACKNOWLEDGED and launch.machine == device


def test_no_daemon_means_504_in_time_with_no_transaction_left_open(processes, user, workspace, device):
    server = processes.start_server("acp-timeout-server", ACP_LAUNCH_ACK_TIMEOUT=2)
    token = make_token(user)
    result = {}

    def launch():
        started = time.monotonic()
        result["response"] = launch_session(server, token, workspace, timeout=10)
        result["elapsed"] = time.monotonic() - started

    waiter = threading.Thread(target=launch)
    waiter.start()
    wait_for_waiters(server.url, 1, timeout=5)

    def server_connection_released():
        rows = pg_activity()
        return rows if not any(name == "acp-timeout-server" for name, _ in rows) else None

    # The waiter's first check (and the /healthz just asked) give their connections back at once.
    during = wait_until(server_connection_released, 1, message="the server's own connections to close")
    waiter.join(10)

    # While it waits, the server holds no connection of its own but its LISTEN one, and nothing idles in a transaction.
    assert not [row for row in during if row[1] == "idle in transaction"], during
    assert not [row for row in during if row[0] == "acp-timeout-server"], during
    assert any(row[0] == "acp-listener" for row in during), during

    response = result["response"]
    launch = Launch.objects.get()
    assert response.status_code == 504
    assert response.json() == {"status": "error", "payload": {"code": "daemon_timeout", "launch_id": str(launch.id)}}
    assert result["elapsed"] < 2 + 1
    assert launch.status == LaunchStatus.TIMED_OUT and launch.timed_out_at is not None
    assert not [row for row in pg_activity() if row[1] == "idle in transaction"]

    late = httpx.post(
        f"{server.url}/api/v1/machines/{device.id}/launches/{launch.id}/ack",
        json={"status": "ok", "payload": {"pid": 1}},
        headers=bearer(make_token(user, device=device)),
        timeout=10,
    )
    assert late.status_code == 409 and late.json()["code"] == "conflict"
    launch.refresh_from_db()
    assert launch.status == LaunchStatus.TIMED_OUT and launch.local_session is None


def test_the_daemon_reconnects_after_the_server_restarts(processes, user, workspace, device):
    server = processes.start_server("acp-first")
    daemon = processes.start_daemon(server, make_token(user, device=device), "--device", str(device.id))
    wait_until(lambda: "is online" in daemon.log(), 20, message="the daemon to start")
    server.stop()

    again = processes.start_server("acp-second", port=server.port)
    response = launch_session(again, make_token(user), workspace, {"initial_prompt": "after the restart"})
    assert response.status_code == 200 and response.json()["status"] == "ok", response.text
    processes.agent_pids.add(response.json()["payload"]["pid"])
    assert "retrying" in daemon.log()


def test_an_agent_that_exits_by_itself_completes_its_session_by_exit_code(processes, user, workspace, device):
    server = processes.start_server()
    failing = "sh -c 'sleep 0.5; exit 3'"
    processes.start_daemon(server, make_token(user, device=device), "--device", str(device.id), "--command", failing)
    response = launch_session(server, make_token(user), workspace)
    assert response.json()["status"] == "ok", response.text
    session_id = response.json()["payload"]["local_session_id"]

    session = wait_until(
        lambda: LocalSession.objects.filter(pk=session_id, completed_at__isnull=False).first(), 15, 0.1, "completion"
    )
    assert session.status == "failed" and "3" in session.error


def test_a_command_that_cannot_start_is_acknowledged_as_an_error(processes, user, workspace, device):
    server = processes.start_server()
    processes.start_daemon(
        server, make_token(user, device=device), "--device", str(device.id), "--command", "/nonexistent/agent"
    )
    response = launch_session(server, make_token(user), workspace)
    assert response.status_code == 200
    assert response.json()["status"] == "error" and response.json()["payload"]["code"] == "spawn_failed"
    assert Launch.objects.get().status == LaunchStatus.FAILED
    assert not LocalSession.objects.exists()


def test_stopping_the_daemon_ends_its_agents_and_their_sessions(processes, user, workspace, device):
    server = processes.start_server()
    daemon = processes.start_daemon(server, make_token(user, device=device), "--device", str(device.id))
    response = launch_session(server, make_token(user), workspace)
    pid = response.json()["payload"]["pid"]
    processes.agent_pids.add(pid)

    assert daemon.stop() == 0
    assert process_state(pid) is None
    session = LocalSession.objects.get(pk=response.json()["payload"]["local_session_id"])
    assert session.status == "cancelled"
    Device.objects.filter(pk=device.pk).update(last_seen_at=timezone.now())


@pytest.mark.parametrize("delay", ["0", "0.02", "0.1"])
def test_a_daemon_stopped_while_it_starts_a_launch_leaves_no_agent_and_no_running_session(
    processes, tmp_path, user, workspace, device, delay
):
    # The agent stops its own daemon (SIGTERM to its parent) as it starts, `delay` s in: while the daemon spawns it,
    # acknowledges it or registers its session. A stop that lands there once left the agent running, its session
    # never reported cancelled.
    server = processes.start_server(ACP_LAUNCH_ACK_TIMEOUT="2")
    pid_file = tmp_path / "agent.pid"
    agent = f"sh -c 'echo $$ > {pid_file}; sleep {delay}; kill -TERM $PPID; exec sleep 60'"
    daemon = processes.start_daemon(
        server, make_token(user, device=device), "--device", str(device.id), "--command", agent
    )

    response = launch_session(server, make_token(user), workspace)
    pid = wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 10, 0.05, "the agent to start")
    processes.agent_pids.add(int(pid))
    daemon.popen.wait(15)

    assert daemon.popen.returncode == 0, daemon.log()
    assert process_state(int(pid)) is None, daemon.log()
    sessions = list(LocalSession.objects.values_list("status", flat=True))
    if response.json()["status"] == "ok":  # the "ok" reached the server first: the session was reported cancelled
        assert sessions == ["cancelled"], daemon.log()
    else:  # stopped before its "ok": no session at all
        assert response.status_code == 504 and sessions == [], response.text
