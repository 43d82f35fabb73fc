"""POST /api/v1/workspaces/{id}/sessions: every validation rule, and the answers that come at once."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from acp.models import Device
from commands.models import Thread
from sessions.choices import LaunchStatus
from sessions.models import Launch, Workspace
from tests.sessions.conftest import make_launch

pytestmark = pytest.mark.django_db

SEED_BODY = {
    "user_session_id": None,
    "metadata": {"source": "cli", "nested": {"a": [1, 2]}},
    "initial_prompt": "Fix the flaky test\nand explain why.",
    "worktree_name": "fix-flaky-test",
    "session_settings": {
        "code": {
            "mode": "agent",
            "default_provider": "codex",
            "providers": {
                "claude_code": {"model": "haiku"},
                "codex": {"model": "gpt-5.1-codex-max", "thinking": "low"},
            },
        },
        "voice": {"language": "en-US"},
    },
    "resume_session_id": "sdk-session-1",
    "agent_session_id": "agent-session-1",
}


@pytest.fixture
def offline_device(user):
    return Device.objects.create(user=user, name="asleep", last_seen_at=timezone.now() - timedelta(hours=1))


def url(workspace):
    return f"/api/v1/workspaces/{workspace.id}/sessions"


def assert_400(response, *path):
    """A 400 whose field errors name `path` (e.g. "session_settings", "code", "mode")."""
    assert response.status_code == 400, response.content
    body = response.json()
    assert set(body) == {"error", "code", "details"} and body["code"] == "invalid_request"
    details = body["details"]
    for key in path:
        assert isinstance(details, dict) and key in details, (path, body)
        details = details[key]
    assert Launch.objects.count() == 0
    return body


BAD_BODIES = [
    ({"machine_id": "not-a-uuid"}, ["machine_id"]),
    ({"machine_id": 5}, ["machine_id"]),
    ({"machine_id": True}, ["machine_id"]),
    ({"machine_id": {"id": "x"}}, ["machine_id"]),
    ({"machine_id": str(uuid.uuid4())}, ["machine_id"]),
    ({"user_session_id": str(uuid.uuid4())}, ["user_session_id"]),
    ({"user_session_id": 12}, ["user_session_id"]),
    ({"user_session_id": ["x"]}, ["user_session_id"]),
    ({"metadata": ["a"]}, ["metadata"]),
    ({"metadata": "a"}, ["metadata"]),
    ({"metadata": None}, ["metadata"]),
    ({"initial_prompt": 5}, ["initial_prompt"]),
    ({"initial_prompt": True}, ["initial_prompt"]),
    ({"initial_prompt": {"text": "x"}}, ["initial_prompt"]),
    ({"worktree_name": 5}, ["worktree_name"]),
    ({"worktree_name": "w" * 256}, ["worktree_name"]),
    ({"resume_session_id": 1.5}, ["resume_session_id"]),
    ({"agent_session_id": []}, ["agent_session_id"]),
    ({"session_settings": "agent"}, ["session_settings"]),
    ({"session_settings": []}, ["session_settings"]),
    ({"session_settings": None}, ["session_settings"]),
    ({"session_settings": {"code": "agent"}}, ["session_settings", "code"]),
    ({"session_settings": {"code": {"mode": "yolo"}}}, ["session_settings", "code", "mode"]),
    ({"session_settings": {"code": {"mode": 1}}}, ["session_settings", "code", "mode"]),
    ({"session_settings": {"code": {"default_provider": 3}}}, ["session_settings", "code", "default_provider"]),
    ({"session_settings": {"code": {"default_provider": "codex"}}}, ["session_settings", "code", "default_provider"]),
    (
        {"session_settings": {"code": {"default_provider": "codex", "providers": {"claude_code": {}}}}},
        ["session_settings", "code", "default_provider"],
    ),
    ({"session_settings": {"code": {"providers": []}}}, ["session_settings", "code", "providers"]),
    (
        {"session_settings": {"code": {"providers": {"claude_code": {"model": 4}}}}},
        ["session_settings", "code", "providers", "claude_code", "model"],
    ),
    (
        {"session_settings": {"code": {"providers": {"claude_code": "haiku"}}}},
        ["session_settings", "code", "providers", "claude_code"],
    ),
    (
        {"session_settings": {"code": {"providers": {"codex": {"model": False}}}}},
        ["session_settings", "code", "providers", "codex", "model"],
    ),
    (
        {"session_settings": {"code": {"providers": {"codex": {"thinking": "extreme"}}}}},
        ["session_settings", "code", "providers", "codex", "thinking"],
    ),
    (
        {"session_settings": {"code": {"providers": {"codex": {"thinking": 2}}}}},
        ["session_settings", "code", "providers", "codex", "thinking"],
    ),
    (
        {"session_settings": {"code": {"providers": {"gemini": "pro"}}}},
        ["session_settings", "code", "providers", "gemini"],
    ),
    ({"session_settings": {"voice": "en"}}, ["session_settings", "voice"]),
    ({"session_settings": {"voice": {"language": 44}}}, ["session_settings", "voice", "language"]),
]


@pytest.mark.parametrize(("body", "path"), BAD_BODIES)
def test_bad_body_is_400_naming_the_field_and_records_nothing(api, workspace, body, path):
    assert_400(api.post(url(workspace), body, format="json"), *path)


@pytest.mark.parametrize("payload", ["[1]", '"x"', "3", "null"])
def test_a_body_that_is_not_an_object_is_400(api, workspace, payload):
    response = api.generic("POST", url(workspace), payload, content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "invalid_request"
    assert Launch.objects.count() == 0


def test_nul_bytes_are_400(api, workspace):
    response = api.post(url(workspace), {"initial_prompt": "a\x00b"}, format="json")
    assert response.status_code == 400
    assert Launch.objects.count() == 0


def test_someone_elses_machine_is_400_naming_machine_id(api, workspace, other_device):
    assert_400(api.post(url(workspace), {"machine_id": str(other_device.id)}, format="json"), "machine_id")


def test_someone_elses_thread_is_400_naming_user_session_id(api, workspace, other_user):
    theirs = Thread.objects.create(user=other_user, title="theirs")
    assert_400(api.post(url(workspace), {"user_session_id": str(theirs.id)}, format="json"), "user_session_id")


@pytest.mark.parametrize("body", [{}, {"machine_id": None}])
def test_no_machine_and_no_default_machine_is_400_naming_machine_id(api, user, body):
    bare = Workspace.objects.create(user=user, name="no default")
    body = assert_400(api.post(url(bare), body, format="json"), "machine_id")
    assert "default machine" in body["error"]


def test_unknown_or_someone_elses_workspace_is_404(api, other_workspace):
    for workspace_id in (other_workspace.id, uuid.uuid4()):
        response = api.post(f"/api/v1/workspaces/{workspace_id}/sessions", {}, format="json")
        assert response.status_code == 404 and response.json()["code"] == "not_found"
        assert api.get(f"/api/v1/workspaces/{workspace_id}/sessions").status_code == 404
    assert Launch.objects.count() == 0


def test_device_tokens_cannot_launch(device_api, workspace):
    assert device_api.post(url(workspace), {}, format="json").status_code == 403
    assert device_api.get(url(workspace)).status_code == 403
    assert Launch.objects.count() == 0


def test_anonymous_is_401(anon, workspace):
    assert anon.post(url(workspace), {}, format="json").status_code == 401


def test_offline_machine_answers_at_once_and_the_launch_is_recorded_failed(api, workspace, offline_device):
    response = api.post(url(workspace), {"machine_id": str(offline_device.id)}, format="json")
    assert response.status_code == 200
    launch = Launch.objects.get()
    assert response.json() == {"status": "error", "payload": {"code": "machine_offline", "launch_id": str(launch.id)}}
    assert launch.status == LaunchStatus.FAILED and launch.error_code == "machine_offline"
    assert launch.machine == offline_device and launch.ack_status is None and launch.thread is None


def test_a_default_machine_that_is_offline_answers_machine_offline(api, user, offline_device):
    workspace = Workspace.objects.create(user=user, name="w", default_machine=offline_device)
    response = api.post(url(workspace), {}, format="json")
    assert response.status_code == 200 and response.json()["payload"]["code"] == "machine_offline"


def test_every_request_field_is_recorded_as_sent(api, user, workspace, offline_device):
    thread = Thread.objects.create(user=user, title="earlier")
    body = {
        **SEED_BODY,
        "machine_id": str(offline_device.id),
        "user_session_id": str(thread.id),
        "session_settings": {
            **SEED_BODY["session_settings"],
            "code": {
                **SEED_BODY["session_settings"]["code"],
                "providers": {**SEED_BODY["session_settings"]["code"]["providers"], "gemini": {"model": "pro"}},
            },
            "theme": "dark",  # unknown keys are kept as sent
        },
    }
    assert api.post(url(workspace), body, format="json").status_code == 200
    launch = Launch.objects.get()
    assert launch.workspace == workspace and launch.machine == offline_device and launch.user_session == thread
    assert launch.metadata == body["metadata"]
    assert launch.initial_prompt == body["initial_prompt"]
    assert launch.worktree_name == "fix-flaky-test"
    assert launch.session_settings == body["session_settings"]
    assert launch.resume_session_id == "sdk-session-1" and launch.agent_session_id == "agent-session-1"

    listed = api.get(url(workspace)).json()["data"][0]
    assert listed["session_settings"] == body["session_settings"] and listed["user_session_id"] == str(thread.id)


def test_nullable_fields_accept_null(api, workspace, offline_device):
    body = {
        "machine_id": str(offline_device.id),
        "user_session_id": None,
        "initial_prompt": None,
        "worktree_name": None,
        "resume_session_id": None,
        "agent_session_id": None,
        "session_settings": {
            "code": {"mode": None, "default_provider": None, "providers": {"codex": {"model": None, "thinking": None}}},
            "voice": {"language": None},
        },
    }
    assert api.post(url(workspace), body, format="json").status_code == 200
    launch = Launch.objects.get()
    assert launch.initial_prompt is None and launch.metadata == {}


@pytest.mark.parametrize("mode", ["agent", "plan", "ask"])
@pytest.mark.parametrize("thinking", ["low", "medium", "high"])
def test_known_modes_and_thinking_levels_are_accepted(api, workspace, offline_device, mode, thinking):
    settings = {"code": {"mode": mode, "providers": {"codex": {"thinking": thinking}}}}
    body = {"machine_id": str(offline_device.id), "session_settings": settings}
    assert api.post(url(workspace), body, format="json").status_code == 200


def test_list_shows_launches_with_their_state_newest_first(
    api, workspace, second_device, django_assert_max_num_queries
):
    now = timezone.now()
    old = make_launch(
        workspace,
        created_at=now - timedelta(minutes=2),
        status=LaunchStatus.TIMED_OUT,
        error_code="daemon_timeout",
        timed_out_at=now,
    )
    new = make_launch(workspace, machine=second_device, created_at=now)
    with django_assert_max_num_queries(4):  # token, workspace, count, page
        page = api.get(url(workspace)).json()
    assert page["object"] == "list" and page["total_count"] == 2 and page["has_more"] is False
    assert [(item["id"], item["status"]) for item in page["data"]] == [
        (str(new.id), "pending"),
        (str(old.id), "timed_out"),
    ]
    assert page["data"][1]["error_code"] == "daemon_timeout" and page["data"][1]["timed_out_at"]

    only_timed_out = api.get(url(workspace) + "?status=timed_out").json()
    assert [item["id"] for item in only_timed_out["data"]] == [str(old.id)]
    on_second = api.get(url(workspace) + f"?machine_id={second_device.id}").json()
    assert [item["id"] for item in on_second["data"]] == [str(new.id)]
    assert api.get(url(workspace) + "?status=nope").status_code == 400

    one = api.get(f"{url(workspace)}/{old.id}")
    assert one.status_code == 200 and one.json() == page["data"][1]


def test_someone_elses_launch_is_404(api, other_workspace):
    theirs = make_launch(other_workspace)
    assert api.get(f"/api/v1/workspaces/{other_workspace.id}/sessions/{theirs.id}").status_code == 404


def test_launch_query_count(api, user, workspace, offline_device, django_assert_max_num_queries):
    thread = Thread.objects.create(user=user, title="t")
    body = {"machine_id": str(offline_device.id), "user_session_id": str(thread.id), "initial_prompt": "p"}
    # token, workspace (with its default machine), machine, thread, the three locked FOR KEY SHARE in one statement
    # (so a delete of one of them cannot cross the insert), insert (+ the test transaction's savepoint pair),
    # + the caller's thread records launch.requested and launch.failed in one append (sequence, insert)
    with django_assert_max_num_queries(10):
        assert api.post(url(workspace), body, format="json").status_code == 200
