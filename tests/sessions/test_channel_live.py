"""The machine channel against live servers: work made on one process reaches the channel open on another, backlog
and reconnection lose nothing and repeat nothing settled, a second channel replaces the first, presence, SIGTERM."""

import signal
import threading
import time
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from acp.models import ApiToken, Device
from acp.services import token_hash
from commands.services import command_ack, command_enqueue, local_session_create, thread_create
from sessions.services import launch_acknowledge, launch_time_out
from tests.commands.test_events_live import StreamReader
from tests.conftest import make_token
from tests.sessions.conftest import make_launch
from tests.sessions.live import wait_until
from tests.sessions.test_live import bearer, launch_session, pg_activity

pytestmark = pytest.mark.django_db(transaction=True)

HEARTBEAT = 0.3


@pytest.fixture
def servers(processes):
    env = {"ACP_STREAM_HEARTBEAT": HEARTBEAT, "ACP_CHANNEL_MAX_SECONDS": 30}
    return processes.start_server("acp-work", **env), processes.start_server("acp-channel", **env)


@pytest.fixture
def running(user, device):
    """A running session on the machine."""
    thread = thread_create(user=user, title="channel")
    return local_session_create(user=user, thread=thread, device=device, status="running")


def open_channel(server, token, machine, **kwargs) -> StreamReader:
    channel = StreamReader(f"{server.url}/api/v1/machines/{machine.id}/stream", token, named=True, **kwargs)
    channel.comment("connected")
    return channel


def control_url(server, session) -> str:
    return f"{server.url}/v1/threads/{session.thread_id}/local-sessions/{session.id}/control"


def enqueue(server, token, session, command_type="message", payload=None) -> dict:
    payload = {"text": "hi"} if payload is None and command_type == "message" else payload or {}
    created = httpx.post(
        control_url(server, session), json={"commandType": command_type, "payload": payload}, headers=bearer(token)
    )
    assert created.status_code == 201, created.text
    return created.json()["command"]


def ack(server, token, session, command_id, status="acknowledged") -> None:
    url = f"{control_url(server, session)}/{command_id}/ack"
    answer = httpx.post(url, json={"status": status}, headers=bearer(token))
    assert answer.status_code == 200, answer.text


def ids(events) -> list[str]:
    return [event_id for _, event_id, _ in events]


def test_work_made_on_one_process_reaches_the_channel_on_another(servers, user, workspace, device, running):
    work, channel_server = servers
    user_token, device_token = make_token(user), make_token(user, device=device)
    channel = open_channel(channel_server, device_token, device)

    launched = {}
    waiting = threading.Thread(target=lambda: launched.update(answer=launch_session(work, user_token, workspace)))
    waiting.start()
    [(name, event_id, launch)] = channel.events(1)
    polled = httpx.get(f"{work.url}/api/v1/machines/{device.id}/launches", headers=bearer(device_token)).json()
    assert (name, event_id, launch) == ("launch", f"launch:{launch['id']}", polled["data"][0])
    acked = httpx.post(
        f"{work.url}/api/v1/machines/{device.id}/launches/{launch['id']}/ack",
        json={"status": "ok", "payload": {"pid": 1}},
        headers=bearer(device_token),
    )
    assert acked.status_code == 200, acked.text
    waiting.join(10)
    assert launched["answer"].json()["status"] == "ok"

    command = enqueue(work, user_token, running, "pause")
    [(name, event_id, data)] = channel.events(1)
    polled = httpx.get(f"{control_url(work, running)}/poll", headers=bearer(device_token)).json()
    assert (name, event_id, data) == ("command", f"command:{command['id']}", polled["data"][0])
    assert data["sessionId"] == str(running.id) and data["threadId"] == str(running.thread_id)
    channel.comment("keepalive", timeout=2)
    channel.close()


def test_the_backlog_is_what_is_pending_launches_first(servers, user, workspace, device, running):
    work, channel_server = servers
    now = timezone.now()
    older = make_launch(workspace, created_at=now - timedelta(seconds=2))
    newer = make_launch(workspace, created_at=now - timedelta(seconds=1))
    launch_acknowledge(launch=make_launch(workspace), status="ok")
    launch_time_out(launch_id=make_launch(workspace).pk)
    make_launch(workspace, created_at=now - timedelta(minutes=5))  # pending, past its deadline
    commands = [command_enqueue(session=running, command_type="message", payload={"text": str(n)}) for n in range(5)]
    for command, status in zip(commands[2:], ["acknowledged", "completed", "cancelled"], strict=True):
        command_ack(session=running, command_id=command.pk, status=status)
    token = make_token(user, device=device)

    channel = open_channel(channel_server, token, device)
    backlog = channel.events(4)
    assert [name for name, _, _ in backlog] == ["launch", "launch", "command", "command"]
    assert ids(backlog) == [f"launch:{older.pk}", f"launch:{newer.pk}", *(f"command:{c.pk}" for c in commands[:2])]
    assert [data["payload"]["text"] for _, _, data in backlog[2:]] == ["0", "1"]
    live = enqueue(work, make_token(user), running)
    assert ids(channel.events(1)) == [f"command:{live['id']}"]  # nothing settled came in between
    channel.close()


def test_a_reconnection_gets_again_what_is_pending_and_nothing_acknowledged(servers, user, device, running):
    work, channel_server = servers
    user_token, token = make_token(user), make_token(user, device=device)
    first = open_channel(channel_server, token, device)
    one, two = enqueue(work, user_token, running), enqueue(work, user_token, running)
    assert ids(first.events(2)) == [f"command:{one['id']}", f"command:{two['id']}"]
    first.close()
    assert first.ended.wait(5)
    ack(work, token, running, one["id"])  # while no channel is open

    plain = open_channel(channel_server, token, device)
    assert ids(plain.events(1)) == [f"command:{two['id']}"]
    three = enqueue(work, user_token, running)
    assert ids(plain.events(1)) == [f"command:{three['id']}"]
    plain.close()
    assert plain.ended.wait(5)

    resumed = open_channel(channel_server, token, device, headers={"Last-Event-ID": f"command:{three['id']}"})
    assert ids(resumed.events(2)) == [f"command:{two['id']}", f"command:{three['id']}"]
    resumed.close()


def test_a_second_channel_replaces_the_first(servers, user, device, running):
    work, channel_server = servers
    token = make_token(user, device=device)
    first = open_channel(channel_server, token, device)
    second = open_channel(work, token, device)  # on the other process
    [(name, event_id, data)] = first.events(1)
    assert (name, event_id, data) == ("replaced", None, {"machine_id": str(device.id)})
    assert first.ended.wait(3), "the replaced channel did not end"
    assert first.status == 200

    command = enqueue(channel_server, make_token(user), running)
    assert ids(second.events(1)) == [f"command:{command['id']}"]
    assert Device.objects.filter(pk=device.pk).values_list("channel_opened_at", flat=True).get() is not None
    second.close()


def test_a_revoked_key_ends_its_channel_and_gets_no_more_work(servers, user, device, running):
    work, channel_server = servers
    user_token, device_token = make_token(user), make_token(user, device=device)
    channel = open_channel(channel_server, device_token, device)
    key = ApiToken.objects.get(key_hash=token_hash(device_token))
    revoked = httpx.post(f"{work.url}/v1/api-keys/{key.pk}/revoke", headers=bearer(user_token))  # the other process
    assert revoked.status_code == 200, revoked.text
    assert channel.ended.wait(3), "the revoked key's channel did not end"
    enqueue(work, user_token, running)
    events = [item for kind, item in list(channel.items.queue) if kind == "event"]
    assert events == [] and channel.status == 200  # it ended with no event: no `replaced`, no command
    again = httpx.get(f"{channel_server.url}/api/v1/machines/{device.id}/stream", headers=bearer(device_token))
    assert again.status_code == 401


def test_an_open_channel_keeps_its_machine_online_and_its_end_lets_it_go_offline(processes, settings, user, device):
    offline_after, interval = 2, 0.3
    settings.ACP_DEVICE_OFFLINE_AFTER = offline_after  # as the server reads it
    server = processes.start_server(
        "acp-presence",
        ACP_DEVICE_OFFLINE_AFTER=offline_after,
        ACP_CHANNEL_PRESENCE_INTERVAL=interval,
        ACP_STREAM_HEARTBEAT=HEARTBEAT,  # the reader notices its close at the next line
    )
    Device.objects.filter(pk=device.pk).update(last_seen_at=timezone.now() - timedelta(hours=1))
    token = make_token(user, device=device)

    def status() -> str:
        answer = httpx.get(f"{server.url}/v1/devices/{device.id}", headers=bearer(make_token(user)))
        return answer.json()["device"]["status"]

    channel = open_channel(server, token, device)
    opened = time.monotonic()
    while time.monotonic() < opened + offline_after + 2 * interval:  # past OFFLINE_AFTER, with no other traffic
        assert Device.objects.get(pk=device.pk).is_online(), "the machine read offline with its channel open"
        time.sleep(interval / 3)
    assert status() == "online"
    channel.close()
    assert channel.ended.wait(5)
    closed = time.monotonic()
    wait_until(lambda: not Device.objects.get(pk=device.pk).is_online(), offline_after + 3, message="offline")
    assert time.monotonic() - closed >= offline_after - 2 * interval - 0.2  # not before its last refresh aged
    assert status() == "offline"


def test_sigterm_ends_every_open_channel_at_once(processes, user, device, second_device):
    server = processes.start_server("acp-channel-deploy", ACP_SHUTDOWN_GRACE=5, ACP_STREAM_HEARTBEAT=30)
    channels = [open_channel(server, make_token(user, device=machine), machine) for machine in (device, second_device)]
    server.popen.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert all(channel.ended.wait(3) for channel in channels), "a channel outlived the SIGTERM"
    ended_after = time.monotonic() - signalled
    server.popen.wait(5)
    assert ended_after < 2 and all(channel.status == 200 for channel in channels)


def test_idle_channels_hold_no_request_thread_and_no_connection(processes, user, device, second_device):
    server = processes.start_server("acp-idle-channels", ACP_REQUEST_THREADS="1", ACP_STREAM_HEARTBEAT="30")
    extra = [Device.objects.create(user=user, name=f"box {n}", last_seen_at=timezone.now()) for n in range(3)]
    machines = [device, second_device, *extra]
    channels = [open_channel(server, make_token(user, device=machine), machine) for machine in machines]
    started = time.monotonic()  # five open channels, one request thread: a plain request is still served at once
    assert httpx.get(f"{server.url}/v1/devices", headers=bearer(make_token(user)), timeout=5).status_code == 200
    assert time.monotonic() - started < 2
    name = "acp-idle-channels"
    wait_until(lambda: name not in [app for app, _ in pg_activity()], 5, message="no connection of the server")
    for channel in channels:
        channel.close()


def test_a_daemon_connect_answers_alike_on_the_fast_path_and_through_django(processes, user, device, running):
    """The optimised server serves a plain connect without Django (acp/serving/fast_streams.py); a stock one through
    Django and DRF: the same status, headers and stream."""
    command = command_enqueue(session=running, command_type="pause")
    token = make_token(user, device=device)
    answers = {}
    for mode in ("optimised", "stock"):
        server = processes.start_server(f"acp-{mode}", ACP_SERVING=mode, ACP_STREAM_HEARTBEAT=HEARTBEAT)
        url = f"{server.url}/api/v1/machines/{device.id}/stream"
        with httpx.stream("GET", url, headers={**bearer(token), "Accept": "text/event-stream"}) as response:
            body = b""
            for chunk in response.iter_raw():
                body += chunk
                if b"\n\n" in body.partition(b"event: command")[2]:
                    break
            volatile = {"date", "ratelimit-remaining", "ratelimit-reset", "x-ratelimit-remaining", "x-ratelimit-reset"}
            headers = {name: value for name, value in response.headers.items() if name not in volatile}
            answers[mode] = (response.status_code, headers, body)
    assert answers["optimised"] == answers["stock"]
    status, headers, body = answers["optimised"]
    assert status == 200 and headers["content-type"] == "text/event-stream" and "x-ratelimit-limit" in headers
    assert body.startswith(b": connected\n\nevent: command\nid: command:" + str(command.pk).encode())
