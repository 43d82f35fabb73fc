"""/v1/threads and /v1/threads/{id}/local-sessions: create, list, get, heartbeat, complete."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from acp.models import Device
from bindings.models import WorkspaceBinding
from commands.models import ControlCommand, LocalSession, Thread
from commands.services import local_session_create, thread_create
from tests.commands.conftest import make_command, session_url, sessions_url
from tests.conftest import make_client, make_token

pytestmark = pytest.mark.django_db

THREAD_KEYS = {"id", "userId", "environmentId", "projectId", "title", "status", "metadata", "createdAt", "updatedAt"}
SESSION_KEYS = {
    "id",
    "threadId",
    "userId",
    "deviceId",
    "workspaceBindingId",
    "environmentId",
    "status",
    "metadata",
    "error",
    "startedAt",
    "lastHeartbeatAt",
    "completedAt",
    "createdAt",
    "updatedAt",
    "pausedAt",
}
NOT_FOUND = {"error": "Not found.", "code": "not_found", "details": {}}


def iso(moment):
    return moment.isoformat().replace("+00:00", "Z")


# --- threads ---


def test_thread_create_get_list(api, user, environment):
    response = api.post(
        "/v1/threads", {"environmentId": str(environment.id), "title": "t", "metadata": {"a": 1}}, format="json"
    )
    assert response.status_code == 201, response.content
    thread = response.json()["thread"]
    assert set(thread) == THREAD_KEYS
    assert thread["userId"] == str(user.id) and thread["environmentId"] == str(environment.id)
    assert thread["status"] == "active" and thread["metadata"] == {"a": 1} and thread["title"] == "t"

    assert api.get(f"/v1/threads/{thread['id']}").json() == {"thread": thread}
    listed = api.get("/v1/threads").json()
    assert listed["object"] == "list" and listed["total_count"] == 1 and listed["has_more"] is False
    assert listed["data"] == [thread]


def test_thread_create_with_nothing_and_status_is_read_only(api):
    response = api.post("/v1/threads", {"status": "completed"}, format="json")
    assert response.status_code == 201
    thread = response.json()["thread"]
    assert thread["status"] == "active" and thread["title"] == "" and thread["environmentId"] is None


@pytest.mark.parametrize(
    "body, field",
    [({"metadata": [1]}, "metadata"), ({"title": {"x": 1}}, "title"), ({"title": "x" * 501}, "title")],
)
def test_thread_create_bad_input_is_400(api, body, field):
    response = api.post("/v1/threads", body, format="json")
    assert response.status_code == 400 and field in response.json()["details"]
    assert Thread.objects.count() == 0


def test_thread_with_someone_elses_environment_is_400(api, other_user):
    from acp.models import Environment

    theirs = Environment.objects.create(user=other_user, name="theirs")
    response = api.post("/v1/threads", {"environmentId": str(theirs.id)}, format="json")
    assert response.status_code == 400 and "environmentId" in response.json()["details"]


def test_thread_filters(api, user, environment):
    thread_create(user=user, environment=environment)
    thread_create(user=user)
    assert api.get(f"/v1/threads?environmentId={environment.id}").json()["total_count"] == 1
    assert api.get("/v1/threads?status=active").json()["total_count"] == 2
    assert api.get("/v1/threads?status=bogus").status_code == 400


def test_other_users_thread_is_404(api, other_api, thread):
    assert other_api.get(f"/v1/threads/{thread.id}").json() == NOT_FOUND
    assert other_api.get("/v1/threads").json()["total_count"] == 0
    assert other_api.get(sessions_url(thread.id)).status_code == 404
    assert api.get(f"/v1/threads/{uuid.uuid4()}").status_code == 404
    assert api.get("/v1/threads/not-a-uuid").status_code == 404


def test_device_token_reads_only_threads_with_sessions_on_its_device(device_api, user, device, thread):
    other_device = Device.objects.create(user=user, name="desktop")
    elsewhere = thread_create(user=user, title="elsewhere")
    local_session_create(user=user, thread=elsewhere, device=other_device)
    local_session_create(user=user, thread=thread, device=device)
    local_session_create(user=user, thread=thread, device=device)

    listed = device_api.get("/v1/threads").json()
    assert [t["id"] for t in listed["data"]] == [str(thread.id)] and listed["total_count"] == 1
    assert device_api.get(f"/v1/threads/{thread.id}").status_code == 200
    assert device_api.get(f"/v1/threads/{elsewhere.id}").status_code == 404
    response = device_api.post("/v1/threads", {"title": "x"}, format="json")
    assert response.status_code == 403 and response.json()["code"] == "forbidden"


# --- local sessions: create ---


def test_session_create(api, user, thread, device):
    response = api.post(sessions_url(thread.id), {"deviceId": str(device.id), "metadata": {"k": "v"}}, format="json")
    assert response.status_code == 201, response.content
    session = response.json()["session"]
    assert set(session) == SESSION_KEYS
    assert session["threadId"] == str(thread.id) and session["deviceId"] == str(device.id)
    assert session["userId"] == str(user.id) and session["environmentId"] == str(thread.environment_id)
    assert session["status"] == "created" and session["startedAt"] is None and session["pausedAt"] is None
    assert session["metadata"] == {"k": "v"} and session["error"] is None and session["workspaceBindingId"] is None
    assert api.get(session_url(LocalSession.objects.get())).json() == {"session": session}


def test_session_create_running_starts_now_or_at_started_at(api, thread, device):
    running = api.post(sessions_url(thread.id), {"deviceId": str(device.id), "status": "running"}, format="json")
    assert running.status_code == 201 and running.json()["session"]["startedAt"] is not None
    started = timezone.now() - timedelta(minutes=3)
    body = {"deviceId": str(device.id), "status": "running", "startedAt": iso(started)}
    assert api.post(sessions_url(thread.id), body, format="json").json()["session"]["startedAt"] == iso(started)


def test_session_create_with_binding_takes_its_environment(api, user, thread, device):
    from acp.models import Environment

    elsewhere = Environment.objects.create(user=user, name="other box")
    binding = WorkspaceBinding.objects.create(user=user, device=device, environment=elsewhere, local_path="/src")
    body = {"deviceId": str(device.id), "workspaceBindingId": str(binding.id)}
    session = api.post(sessions_url(thread.id), body, format="json").json()["session"]
    assert session["workspaceBindingId"] == str(binding.id) and session["environmentId"] == str(elsewhere.id)


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "deviceId"),
        ({"deviceId": "nope"}, "deviceId"),
        ({"deviceId": str(uuid.uuid4())}, "deviceId"),
        ({"status": "completed"}, "status"),
        ({"status": "paused"}, "status"),
        ({"metadata": "x"}, "metadata"),
        ({"startedAt": "yesterday"}, "startedAt"),
        ({"workspaceBindingId": str(uuid.uuid4())}, "workspaceBindingId"),
    ],
)
def test_session_create_bad_input_is_400(api, thread, device, body, field):
    body = {"deviceId": str(device.id), **body} if field != "deviceId" else body
    response = api.post(sessions_url(thread.id), body, format="json")
    assert response.status_code == 400 and field in response.json()["details"], response.content
    assert LocalSession.objects.count() == 0


def test_session_started_in_the_future_is_400(api, thread, device):
    body = {"deviceId": str(device.id), "startedAt": iso(timezone.now() + timedelta(minutes=10))}
    response = api.post(sessions_url(thread.id), body, format="json")
    assert response.status_code == 400 and "startedAt" in response.json()["details"]


def test_session_create_refuses_other_users_device_binding_and_thread(api, user, thread, device, other_device):
    response = api.post(sessions_url(thread.id), {"deviceId": str(other_device.id)}, format="json")
    assert response.status_code == 400 and "deviceId" in response.json()["details"]
    from acp.models import Environment

    their_env = Environment.objects.create(user=other_device.user, name="e")
    theirs = WorkspaceBinding.objects.create(
        user=other_device.user, device=other_device, environment=their_env, local_path="/theirs"
    )
    body = {"deviceId": str(device.id), "workspaceBindingId": str(theirs.id)}
    response = api.post(sessions_url(thread.id), body, format="json")
    assert response.status_code == 400 and "workspaceBindingId" in response.json()["details"]
    their_thread = thread_create(user=other_device.user)
    assert api.post(sessions_url(their_thread.id), {"deviceId": str(device.id)}, format="json").status_code == 404
    assert api.post(sessions_url(uuid.uuid4()), {"deviceId": str(device.id)}, format="json").status_code == 404
    assert LocalSession.objects.count() == 0


def test_session_binding_on_another_device_is_400(api, user, thread, device, environment):
    desktop = Device.objects.create(user=user, name="desktop")
    binding = WorkspaceBinding.objects.create(user=user, device=desktop, environment=environment, local_path="/x")
    body = {"deviceId": str(device.id), "workspaceBindingId": str(binding.id)}
    response = api.post(sessions_url(thread.id), body, format="json")
    assert response.status_code == 400 and "workspaceBindingId" in response.json()["details"]


def test_device_token_creates_sessions_only_on_its_own_device(device_api, user, thread, device):
    desktop = Device.objects.create(user=user, name="desktop")
    response = device_api.post(sessions_url(thread.id), {"deviceId": str(desktop.id)}, format="json")
    assert response.status_code == 400 and "deviceId" in response.json()["details"]
    response = device_api.post(sessions_url(thread.id), {"deviceId": str(device.id)}, format="json")
    assert response.status_code == 201 and response.json()["session"]["deviceId"] == str(device.id)


# --- local sessions: list and get ---


def test_session_list_filters_and_order(api, user, thread, device):
    desktop = Device.objects.create(user=user, name="desktop")
    first = local_session_create(user=user, thread=thread, device=device)
    second = local_session_create(user=user, thread=thread, device=desktop, status="running")
    local_session_create(user=user, thread=thread_create(user=user), device=device)  # another thread

    listed = api.get(sessions_url(thread.id)).json()
    assert [s["id"] for s in listed["data"]] == [str(second.id), str(first.id)] and listed["total_count"] == 2
    assert [s["id"] for s in api.get(f"{sessions_url(thread.id)}?deviceId={device.id}").json()["data"]] == [
        str(first.id)
    ]
    assert [s["id"] for s in api.get(f"{sessions_url(thread.id)}?status=running").json()["data"]] == [str(second.id)]
    assert api.get(f"{sessions_url(thread.id)}?status=weird").status_code == 400
    assert api.get(f"{sessions_url(thread.id)}?deviceId=zzz").status_code == 400


def test_session_of_another_thread_or_user_is_404(api, other_api, user, thread, session, other_session):
    elsewhere = thread_create(user=user)
    assert api.get(f"{sessions_url(elsewhere.id)}/{session.id}").json() == NOT_FOUND
    assert other_api.get(session_url(session)).json() == NOT_FOUND
    assert api.get(session_url(other_session)).json() == NOT_FOUND
    for action in ("heartbeat", "complete"):
        assert api.post(f"{sessions_url(elsewhere.id)}/{session.id}/{action}", {}, format="json").status_code == 404
        assert other_api.post(session_url(session, f"/{action}"), {}, format="json").status_code == 404
    session.refresh_from_db()
    assert session.status == "running" and session.last_heartbeat_at is None


def test_device_token_sees_only_its_devices_sessions(user, thread, session):
    desktop = Device.objects.create(user=user, name="desktop")
    desktop_api = make_client(make_token(user, device=desktop))
    assert desktop_api.get(session_url(session)).status_code == 404
    assert desktop_api.post(session_url(session, "/heartbeat"), {}, format="json").status_code == 404
    assert desktop_api.post(session_url(session, "/complete"), {}, format="json").status_code == 404
    assert desktop_api.get(sessions_url(thread.id)).json()["total_count"] == 0
    session.refresh_from_db()
    assert session.status == "running"


# --- heartbeat ---


def test_heartbeat_starts_a_created_session(api, user, thread, device):
    session = local_session_create(user=user, thread=thread, device=device)
    response = api.post(session_url(session, "/heartbeat"), {"metadata": {"step": 2}, "error": "warn"}, format="json")
    assert response.status_code == 200
    body = response.json()["session"]
    assert body["status"] == "running" and body["startedAt"] is not None and body["lastHeartbeatAt"] is not None
    assert body["metadata"] == {"step": 2} and body["error"] == "warn"


def test_heartbeat_without_body_keeps_metadata(api, session):
    session.metadata = {"keep": True}
    session.save()
    response = api.post(session_url(session, "/heartbeat"))
    assert response.status_code == 200
    assert response.json()["session"]["metadata"] == {"keep": True}
    assert response.json()["session"]["startedAt"] == iso(session.started_at)


def test_heartbeat_on_an_ended_session_is_409(api, session):
    api.post(session_url(session, "/complete"), {}, format="json")
    response = api.post(session_url(session, "/heartbeat"), {}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "conflict"
    assert response.json()["details"]["session"]["status"] == "completed"


def test_heartbeat_bad_input_is_400(api, session):
    response = api.post(session_url(session, "/heartbeat"), {"metadata": [1], "error": {"x": 1}}, format="json")
    assert response.status_code == 400 and set(response.json()["details"]) == {"metadata", "error"}


# --- complete ---


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_complete_repeat_and_conflict(api, session, status):
    make_command(session, "message")
    acknowledged = make_command(session, "pause", status="acknowledged")
    body = {"status": status, "error": "boom" if status == "failed" else None, "metadata": {"exit": 0}}
    response = api.post(session_url(session, "/complete"), body, format="json")
    assert response.status_code == 200, response.content
    ended = response.json()["session"]
    assert ended["status"] == status and ended["completedAt"] is not None and ended["metadata"] == {"exit": 0}
    # Its pending commands are cancelled; acknowledged ones are the daemon's to finish.
    assert list(ControlCommand.objects.filter(session=session).values_list("status", flat=True).order_by("status")) == [
        "acknowledged",
        "cancelled",
    ]
    acknowledged.refresh_from_db()
    assert acknowledged.status == "acknowledged"

    repeat = api.post(session_url(session, "/complete"), {"status": status, "metadata": {"x": 1}}, format="json")
    assert repeat.status_code == 200 and repeat.json()["session"] == ended

    other = next(s for s in ("completed", "failed", "cancelled") if s != status)
    conflict = api.post(session_url(session, "/complete"), {"status": other}, format="json")
    assert conflict.status_code == 409 and conflict.json()["code"] == "state_transition_conflict"
    assert conflict.json()["details"]["session"] == ended


def test_complete_defaults_to_completed_and_clears_pause(api, session):
    session.paused_at = timezone.now()
    session.save()
    response = api.post(session_url(session, "/complete"))
    assert response.status_code == 200
    assert response.json()["session"]["status"] == "completed" and response.json()["session"]["pausedAt"] is None


def test_complete_at_a_given_time(api, session):
    at = timezone.now() + timedelta(minutes=4)  # a daemon's clock may run a little ahead
    response = api.post(session_url(session, "/complete"), {"completedAt": iso(at)}, format="json")
    assert response.json()["session"]["completedAt"] == iso(at)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"status": "running"}, "status"),
        ({"status": "created"}, "status"),
        ({"completedAt": "soon"}, "completedAt"),
        ({"completedAt": "2000-01-01T00:00:00Z"}, "completedAt"),  # before the session started
        ({"error": ["x"]}, "error"),
    ],
)
def test_complete_bad_input_is_400_and_changes_nothing(api, session, body, field):
    make_command(session)
    response = api.post(session_url(session, "/complete"), body, format="json")
    assert response.status_code == 400 and field in response.json()["details"], response.content
    session.refresh_from_db()
    assert session.status == "running" and ControlCommand.objects.get().status == "pending"


def test_complete_in_the_future_is_400(api, session):
    body = {"completedAt": iso(timezone.now() + timedelta(minutes=6))}
    response = api.post(session_url(session, "/complete"), body, format="json")
    assert response.status_code == 400 and "completedAt" in response.json()["details"]
