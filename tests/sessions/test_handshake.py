"""The launch handshake in one process, with real threads: a waiting launch, the daemon's fetch and ack."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from acp.domain import Conflict
from acp.models import Device
from acp.realtime import get_listener
from commands.choices import SessionStatus
from commands.models import LocalSession, Thread
from sessions import services
from sessions.choices import LaunchStatus
from sessions.models import Launch
from tests.conftest import make_client, make_token
from tests.sessions.conftest import make_launch
from tests.sessions.live import wait_until

pytestmark = pytest.mark.django_db


def poll_url(machine, **params):
    query = "&".join(f"{key}={value}" for key, value in params.items())
    return f"/api/v1/machines/{machine.id}/launches" + (f"?{query}" if query else "")


def ack_url(launch):
    return f"/api/v1/machines/{launch.machine_id}/launches/{launch.id}/ack"


class FakeDaemon(threading.Thread):
    """A daemon in a thread: long-polls the machine's launches and acknowledges the first with `ack`."""

    def __init__(self, raw_token, machine, ack):
        super().__init__(daemon=True)
        self.client = make_client(raw_token)
        self.machine = machine
        self.ack = ack
        self.answers = []

    def run(self):
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                launches = self.client.get(poll_url(self.machine, wait=5)).json()["data"]
                if launches:
                    response = self.client.post(ack_url_from(launches[0]), self.ack, format="json")
                    self.answers.append(response)
                    return
        finally:
            connection.close()


def ack_url_from(item):
    return f"/api/v1/machines/{item['machine_id']}/launches/{item['id']}/ack"


# --- the waiting launch ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_launch_waits_for_the_daemon_and_returns_its_ok_with_the_created_thread_and_session(
    api, user, workspace, device
):
    daemon = FakeDaemon(make_token(user, device=device), device, {"status": "ok", "payload": {"pid": 4242}})
    daemon.start()
    started = time.monotonic()
    response = api.post(f"/api/v1/workspaces/{workspace.id}/sessions", {"initial_prompt": "hello"}, format="json")
    elapsed = time.monotonic() - started
    daemon.join(5)

    assert response.status_code == 200, response.content
    body = response.json()
    launch = Launch.objects.get()
    assert body["status"] == "ok"
    assert body["payload"] == {
        "pid": 4242,
        "launch_id": str(launch.id),
        "thread_id": str(launch.thread_id),
        "local_session_id": str(launch.local_session_id),
    }
    assert elapsed < 5
    assert launch.status == LaunchStatus.ACKNOWLEDGED and launch.ack_payload == {"pid": 4242}
    thread = Thread.objects.get(pk=body["payload"]["thread_id"])
    assert thread.user == user and thread.title == "hello"
    session = LocalSession.objects.get(pk=body["payload"]["local_session_id"])
    assert session.thread == thread and session.device == device and session.user == user
    assert session.status == SessionStatus.RUNNING and session.started_at is not None
    assert session.metadata["launch_id"] == str(launch.id)
    # The daemon's ack answer carries the same ids, so it can steer the session.
    acked = daemon.answers[0].json()
    assert acked["thread_id"] == str(thread.id) and acked["local_session_id"] == str(session.id)


@pytest.mark.django_db(transaction=True)
def test_user_session_id_reuses_the_callers_thread(api, user, workspace, device):
    thread = Thread.objects.create(user=user, title="earlier conversation")
    daemon = FakeDaemon(make_token(user, device=device), device, {"status": "ok"})
    daemon.start()
    body = {"user_session_id": str(thread.id)}
    response = api.post(f"/api/v1/workspaces/{workspace.id}/sessions", body, format="json")
    daemon.join(5)
    assert response.status_code == 200 and response.json()["payload"]["thread_id"] == str(thread.id)
    assert Thread.objects.count() == 1
    assert LocalSession.objects.get().thread == thread


@pytest.mark.django_db(transaction=True)
def test_daemon_error_is_returned_and_the_launch_fails(api, user, workspace, device):
    ack = {"status": "error", "payload": {"code": "worktree_exists", "message": "worktree fix exists"}}
    daemon = FakeDaemon(make_token(user, device=device), device, ack)
    daemon.start()
    response = api.post(f"/api/v1/workspaces/{workspace.id}/sessions", {"worktree_name": "fix"}, format="json")
    daemon.join(5)
    launch = Launch.objects.get()
    assert response.status_code == 200
    assert response.json() == {
        "status": "error",
        "payload": {"code": "worktree_exists", "message": "worktree fix exists", "launch_id": str(launch.id)},
    }
    assert launch.status == LaunchStatus.FAILED and launch.error_code == "worktree_exists"
    assert not Thread.objects.exists() and not LocalSession.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_daemon_error_without_a_code_reads_daemon_error(api, user, workspace, device):
    daemon = FakeDaemon(make_token(user, device=device), device, {"status": "error"})
    daemon.start()
    response = api.post(f"/api/v1/workspaces/{workspace.id}/sessions", {}, format="json")
    daemon.join(5)
    assert response.json()["payload"]["code"] == "daemon_error"


@pytest.mark.django_db(transaction=True)
def test_no_ack_in_time_is_504_and_the_launch_times_out_then_a_late_ack_is_409(api, device_api, workspace, settings):
    settings.ACP_LAUNCH_ACK_TIMEOUT = 0.5
    started = time.monotonic()
    response = api.post(f"/api/v1/workspaces/{workspace.id}/sessions", {}, format="json")
    elapsed = time.monotonic() - started
    launch = Launch.objects.get()
    assert response.status_code == 504
    assert response.json() == {"status": "error", "payload": {"code": "daemon_timeout", "launch_id": str(launch.id)}}
    assert 0.4 < elapsed < 1.5
    assert launch.status == LaunchStatus.TIMED_OUT and launch.timed_out_at is not None
    assert device_api.get(poll_url(workspace.default_machine)).json()["data"] == []

    late = device_api.post(ack_url(launch), {"status": "ok"}, format="json")
    assert late.status_code == 409 and late.json()["code"] == "conflict"
    assert late.json()["details"]["launch"]["status"] == "timed_out"
    launch.refresh_from_db()
    assert launch.status == LaunchStatus.TIMED_OUT and launch.ack_status is None and launch.thread is None
    assert not Thread.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_ack_and_timeout_racing_leave_one_consistent_outcome(user, workspace, device):
    """Whichever of the acknowledgement and the timeout lands first wins; the other changes nothing."""
    outcomes = []
    for _ in range(10):
        launch = make_launch(workspace, expires_at=timezone.now() + timedelta(seconds=5))
        barrier = threading.Barrier(2)
        results = {}

        def ack(launch=launch, barrier=barrier, results=results):
            barrier.wait()
            try:
                results["ack"] = services.launch_acknowledge(launch=launch, status="ok").changed
            except Conflict:
                results["ack"] = False
            finally:
                connection.close()

        def time_out(launch=launch, barrier=barrier, results=results):
            barrier.wait()
            try:
                results["timeout"] = services.launch_time_out(launch_id=launch.pk).changed
            finally:
                connection.close()

        threads = [threading.Thread(target=ack), threading.Thread(target=time_out)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        launch.refresh_from_db()
        assert results["ack"] != results["timeout"]
        if results["ack"]:
            assert launch.status == LaunchStatus.ACKNOWLEDGED and launch.local_session_id is not None
        else:
            assert launch.status == LaunchStatus.TIMED_OUT and launch.thread_id is None
        outcomes.append(launch.status)
    assert LocalSession.objects.count() == outcomes.count(LaunchStatus.ACKNOWLEDGED)


# --- the daemon's fetch ------------------------------------------------------------------------------


def test_fetch_lists_pending_launches_oldest_first_and_counts_as_a_heartbeat(
    device_api, workspace, device, second_device, django_assert_max_num_queries
):
    now = timezone.now()
    Device.objects.filter(pk=device.pk).update(last_seen_at=now - timedelta(hours=1))
    older = make_launch(workspace, created_at=now - timedelta(seconds=3))
    newer = make_launch(workspace, created_at=now - timedelta(seconds=1))
    make_launch(workspace, machine=second_device)  # another machine's
    make_launch(workspace, status=LaunchStatus.TIMED_OUT, error_code="daemon_timeout", timed_out_at=now)
    make_launch(workspace, created_at=now - timedelta(minutes=5), expires_at=now - timedelta(seconds=1))  # expired

    # token, machine, heartbeat UPDATE (in a savepoint under the test's transaction: +2), count, page
    with django_assert_max_num_queries(7):
        response = device_api.get(poll_url(device))
    assert response.status_code == 200
    page = response.json()
    assert set(page) == {"object", "data", "total_count", "has_more"}
    assert [item["id"] for item in page["data"]] == [str(older.id), str(newer.id)]
    assert page["total_count"] == 2 and page["has_more"] is False
    assert page["data"][0]["workspace_id"] == str(workspace.id) and page["data"][0]["status"] == "pending"
    device.refresh_from_db()
    assert device.is_online()

    first = device_api.get(poll_url(device, limit=1)).json()
    assert [item["id"] for item in first["data"]] == [str(older.id)] and first["has_more"] is True


@pytest.mark.parametrize("query", ["wait=-1", "wait=31", "wait=abc", "limit=0", "limit=101", "limit=x"])
def test_bad_fetch_parameters_are_400(device_api, device, query):
    response = device_api.get(f"/api/v1/machines/{device.id}/launches?{query}")
    assert response.status_code == 400 and response.json()["code"] == "invalid_request"


def test_a_device_token_fetches_only_its_own_machine(device_api, api, workspace, device, second_device, other_device):
    make_launch(workspace, machine=second_device)
    for machine in (second_device, other_device):
        response = device_api.get(poll_url(machine))
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    # The owner's user token may fetch any of its machines; someone else's is a 404.
    assert api.get(poll_url(second_device)).json()["total_count"] == 1
    assert api.get(poll_url(other_device)).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_a_waiting_fetch_wakes_as_soon_as_a_launch_is_recorded(device_api, user, workspace, device):
    result = {}

    def fetch():
        started = time.monotonic()
        result["page"] = device_api.get(poll_url(device, wait=10)).json()
        result["elapsed"] = time.monotonic() - started
        connection.close()

    waiter = threading.Thread(target=fetch)
    waiter.start()
    wait_until(lambda: get_listener().waiter_count() == 1, 10, message="the fetch to wait")
    launch = services.launch_create(user=user, workspace=workspace, machine=device)
    waiter.join(15)
    assert [item["id"] for item in result["page"]["data"]] == [str(launch.id)]
    assert result["elapsed"] < 3


@pytest.mark.django_db(transaction=True)
def test_a_waiting_fetch_with_nothing_to_do_answers_an_empty_list_after_wait(device_api, device):
    started = time.monotonic()
    response = device_api.get(poll_url(device, wait=0.5))
    assert response.status_code == 200
    assert response.json() == {"object": "list", "data": [], "total_count": 0, "has_more": False}
    assert 0.4 < time.monotonic() - started < 3


# --- the daemon's ack --------------------------------------------------------------------------------


def test_ack_ok_creates_the_thread_and_session_and_returns_the_launch(
    device_api, workspace, device, django_assert_max_num_queries
):
    launch = make_launch(workspace, initial_prompt="")
    # token, launch, machine FOR KEY SHARE, launch FOR UPDATE, thread, session's references FOR KEY SHARE,
    # session, update, notify; + savepoints (4 of them the commands services' own, 2 the test transaction's);
    # + the timeline's one append (sequence, insert)
    with django_assert_max_num_queries(17):
        response = device_api.post(ack_url(launch), {"status": "ok", "payload": {"pid": 7}}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"] == str(launch.id) and body["status"] == "acknowledged" and body["ack_status"] == "ok"
    assert body["ack_payload"] == {"pid": 7} and body["acknowledged_at"]
    session = LocalSession.objects.get(pk=body["local_session_id"])
    assert str(session.thread_id) == body["thread_id"] and session.device == device
    assert session.thread.title == workspace.name  # no prompt: the thread is named after the workspace


def test_the_same_ack_again_is_200_unchanged(device_api, workspace):
    launch = make_launch(workspace)
    ack = {"status": "ok", "payload": {"pid": 7}}
    first = device_api.post(ack_url(launch), ack, format="json").json()
    again = device_api.post(ack_url(launch), ack, format="json")
    assert again.status_code == 200 and again.json() == first
    assert LocalSession.objects.count() == 1 and Thread.objects.count() == 1


@pytest.mark.parametrize(
    "second", [{"status": "error"}, {"status": "ok", "payload": {"pid": 8}}, {"status": "ok"}], ids=str
)
def test_a_different_ack_after_the_first_is_409_and_changes_nothing(device_api, workspace, second):
    launch = make_launch(workspace)
    first = device_api.post(ack_url(launch), {"status": "ok", "payload": {"pid": 7}}, format="json").json()
    response = device_api.post(ack_url(launch), second, format="json")
    assert response.status_code == 409 and response.json()["code"] == "conflict"
    assert response.json()["details"]["launch"] == first
    assert LocalSession.objects.count() == 1


def test_an_error_ack_repeated_is_200_and_an_ok_after_it_is_409(device_api, workspace):
    launch = make_launch(workspace)
    ack = {"status": "error", "payload": {"code": "no_git"}}
    assert device_api.post(ack_url(launch), ack, format="json").json()["status"] == "failed"
    assert device_api.post(ack_url(launch), ack, format="json").status_code == 200
    assert device_api.post(ack_url(launch), {"status": "ok"}, format="json").status_code == 409
    assert not LocalSession.objects.exists()


def test_ack_after_the_deadline_is_409_even_before_the_waiter_times_it_out(device_api, workspace):
    now = timezone.now()
    launch = make_launch(workspace, created_at=now - timedelta(seconds=20), expires_at=now - timedelta(seconds=10))
    response = device_api.post(ack_url(launch), {"status": "ok"}, format="json")
    assert response.status_code == 409
    launch.refresh_from_db()
    assert launch.status == LaunchStatus.PENDING and launch.ack_status is None  # a 4xx changes nothing


def test_ack_on_a_machine_offline_launch_is_409(device_api, workspace):
    launch = make_launch(workspace, status=LaunchStatus.FAILED, error_code="machine_offline")
    assert device_api.post(ack_url(launch), {"status": "ok"}, format="json").status_code == 409


@pytest.mark.parametrize(
    "body", [{}, {"status": "maybe"}, {"status": 1}, {"status": "ok", "payload": []}, {"status": "ok", "payload": "x"}]
)
def test_bad_ack_body_is_400_and_changes_nothing(device_api, workspace, body):
    launch = make_launch(workspace)
    response = device_api.post(ack_url(launch), body, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid_request"
    launch.refresh_from_db()
    assert launch.status == LaunchStatus.PENDING


def test_null_payload_is_an_empty_one(device_api, workspace):
    launch = make_launch(workspace)
    assert device_api.post(ack_url(launch), {"status": "ok", "payload": None}, format="json").status_code == 200
    launch.refresh_from_db()
    assert launch.ack_payload == {}


def test_ack_scope_device_tokens_and_other_users(
    device_api, second_device_api, api, other_api, workspace, device, second_device
):
    launch = make_launch(workspace)
    # Another device's token, another user's token: 404; a launch addressed through the wrong machine: 404.
    assert second_device_api.post(ack_url(launch), {"status": "ok"}, format="json").status_code == 404
    assert other_api.post(ack_url(launch), {"status": "ok"}, format="json").status_code == 404
    wrong_machine = f"/api/v1/machines/{second_device.id}/launches/{launch.id}/ack"
    assert api.post(wrong_machine, {"status": "ok"}, format="json").status_code == 404
    launch.refresh_from_db()
    assert launch.status == LaunchStatus.PENDING
    # The owner's user token works as well as the machine's own device token.
    assert api.post(ack_url(launch), {"status": "ok"}, format="json").status_code == 200
