"""Control commands: enqueue with its preconditions and Idempotency-Key, list, get, poll, scope and paths."""

import re
import uuid
from pathlib import Path

import pytest
from django.utils import timezone

from acp.models import Device, IdempotencyKey
from commands.models import ControlCommand
from commands.services import local_session_create, thread_create
from tests.commands.conftest import command_url, control_url, make_command, session_url
from tests.conftest import make_client, make_token

pytestmark = pytest.mark.django_db

SEED = Path(__file__).with_name("seed_003_ack.txt")
NOT_FOUND = {"error": "Not found.", "code": "not_found", "details": {}}


def seed_command_fields() -> set[str]:
    """The `command.*` fields of the seed page's 200 response table."""
    fields = set(re.findall(r"^\| command\.(\w+) \|", SEED.read_text(), flags=re.MULTILINE))
    assert len(fields) == 11, fields  # the page lists 11 fields; a parsing slip must not pass silently
    return fields


def enqueue(client, session, body, **headers):
    return client.post(control_url(session), body, format="json", **headers)


# --- enqueue ---


@pytest.mark.parametrize(
    "command_type, payload", [("cancel", {}), ("pause", {"reason": "lunch"}), ("message", {"text": "hi"})]
)
def test_enqueue_returns_201_pending_command(api, user, session, command_type, payload):
    response = enqueue(api, session, {"commandType": command_type, "payload": payload})
    assert response.status_code == 201, response.content
    command = response.json()["command"]
    assert set(command) == seed_command_fields() | {"result"}
    assert command["sessionId"] == str(session.id) and command["threadId"] == str(session.thread_id)
    assert command["userId"] == str(user.id) and command["commandType"] == command_type
    assert command["payload"] == payload and command["status"] == "pending" and command["result"] is None
    assert command["acknowledgedAt"] is None and command["completedAt"] is None
    assert api.get(command_url(ControlCommand.objects.get())).json() == {"command": command}


def test_enqueue_without_payload_stores_an_empty_object(api, session):
    assert enqueue(api, session, {"commandType": "cancel"}).json()["command"]["payload"] == {}


def test_resume_on_a_paused_session(api, session):
    session.paused_at = timezone.now()
    session.save()
    assert enqueue(api, session, {"commandType": "resume"}).status_code == 201


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
@pytest.mark.parametrize("command_type", ["cancel", "pause", "resume", "message"])
def test_enqueue_to_an_ended_session_is_409(api, session, status, command_type):
    api.post(session_url(session, "/complete"), {"status": status}, format="json")
    response = enqueue(api, session, {"commandType": command_type, "payload": {"text": "x"}})
    assert response.status_code == 409 and response.json()["code"] == "conflict"
    assert response.json()["details"]["session"]["status"] == status
    assert ControlCommand.objects.count() == 0


def test_pause_on_a_paused_session_is_409(api, session):
    session.paused_at = timezone.now()
    session.save()
    response = enqueue(api, session, {"commandType": "pause"})
    assert response.status_code == 409 and response.json()["code"] == "conflict"
    assert response.json()["details"]["session"]["pausedAt"] is not None
    assert ControlCommand.objects.count() == 0


def test_resume_on_a_session_not_paused_is_409(api, session):
    response = enqueue(api, session, {"commandType": "resume"})
    assert response.status_code == 409 and response.json()["code"] == "conflict"
    assert ControlCommand.objects.count() == 0


def test_created_session_accepts_commands(api, user, thread, device):
    created = local_session_create(user=user, thread=thread, device=device)
    assert enqueue(api, created, {"commandType": "pause"}).status_code == 201


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "commandType"),
        ({"commandType": "reboot"}, "commandType"),
        ({"commandType": ["cancel"]}, "commandType"),
        ({"commandType": "cancel", "payload": [1]}, "payload"),
        ({"commandType": "cancel", "payload": "x"}, "payload"),
        ({"commandType": "message"}, "payload"),
        ({"commandType": "message", "payload": {}}, "payload"),
        ({"commandType": "message", "payload": {"text": 5}}, "payload"),
        ({"commandType": "message", "payload": {"text": None}}, "payload"),
        ({"commandType": "message", "payload": {"text": {"a": "b"}}}, "payload"),
        ({"commandType": "message", "payload": {"text": "  "}}, "payload"),
    ],
)
def test_enqueue_bad_input_is_400(api, session, body, field):
    response = enqueue(api, session, body)
    assert response.status_code == 400 and field in response.json()["details"], response.content
    assert ControlCommand.objects.count() == 0


def test_enqueue_nul_is_400(api, session):
    response = api.post(
        control_url(session),
        '{"commandType": "message", "payload": {"text": "a\\u0000"}}',
        content_type="application/json",
    )
    assert response.status_code == 400
    assert ControlCommand.objects.count() == 0


# --- Idempotency-Key ---


def test_idempotency_key_replays_the_first_answer(api, session):
    body = {"commandType": "message", "payload": {"text": "once"}}
    first = enqueue(api, session, body, HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 201
    command = ControlCommand.objects.get()
    api.post(command_url(command, "/ack"), {}, format="json")  # the command moves on; the answer does not
    again = enqueue(api, session, body, HTTP_IDEMPOTENCY_KEY="k-1")
    assert again.status_code == 201 and again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert ControlCommand.objects.count() == 1
    record = IdempotencyKey.objects.get()
    assert record.resource_id == command.id and record.response_status == 201

    # Another key is another command.
    assert enqueue(api, session, body, HTTP_IDEMPOTENCY_KEY="k-2").status_code == 201
    assert ControlCommand.objects.count() == 2


def test_idempotency_key_with_a_different_body_or_path_is_422(api, user, session, device):
    enqueue(api, session, {"commandType": "pause"}, HTTP_IDEMPOTENCY_KEY="k")
    response = enqueue(api, session, {"commandType": "cancel"}, HTTP_IDEMPOTENCY_KEY="k")
    assert response.status_code == 422 and set(response.json()) == {"error", "code", "details"}
    elsewhere = local_session_create(user=user, thread=session.thread, device=device, status="running")
    assert enqueue(api, elsewhere, {"commandType": "pause"}, HTTP_IDEMPOTENCY_KEY="k").status_code == 422
    assert ControlCommand.objects.count() == 1


def test_idempotency_key_is_per_user(api, other_api, session, other_session):
    assert enqueue(api, session, {"commandType": "pause"}, HTTP_IDEMPOTENCY_KEY="shared").status_code == 201
    assert enqueue(other_api, other_session, {"commandType": "pause"}, HTTP_IDEMPOTENCY_KEY="shared").status_code == 201
    assert ControlCommand.objects.count() == 2


def test_idempotency_key_replays_a_409_too(api, session):
    response = enqueue(api, session, {"commandType": "resume"}, HTTP_IDEMPOTENCY_KEY="r")
    assert response.status_code == 409
    session.paused_at = timezone.now()
    session.save()
    again = enqueue(api, session, {"commandType": "resume"}, HTTP_IDEMPOTENCY_KEY="r")
    assert again.status_code == 409 and again.json() == response.json()
    assert ControlCommand.objects.count() == 0


def test_idempotency_key_is_not_spent_by_invalid_or_not_found_requests(api, session):
    assert enqueue(api, session, {"commandType": "nope"}, HTTP_IDEMPOTENCY_KEY="k").status_code == 400
    missing = session_url(session).replace(str(session.id), str(uuid.uuid4()))
    assert (
        api.post(f"{missing}/control", {"commandType": "pause"}, format="json", HTTP_IDEMPOTENCY_KEY="k").status_code
        == 404
    )
    assert IdempotencyKey.objects.count() == 0
    assert enqueue(api, session, {"commandType": "pause"}, HTTP_IDEMPOTENCY_KEY="k").status_code == 201


@pytest.mark.parametrize("key", ["", "x" * 256, "a\x00b"])
def test_bad_idempotency_keys_are_400(api, session, key):
    response = enqueue(api, session, {"commandType": "pause"}, HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 400 and "Idempotency-Key" in response.json()["details"]
    assert ControlCommand.objects.count() == 0 and IdempotencyKey.objects.count() == 0


def test_idempotency_key_of_255_characters_is_fine(api, session):
    assert enqueue(api, session, {"commandType": "pause"}, HTTP_IDEMPOTENCY_KEY="x" * 255).status_code == 201


# --- list and get ---


def test_list_is_newest_first_with_filters(api, session):
    old = make_command(session, "pause", status="completed")
    new = make_command(session, "message")
    make_command(session, "cancel", status="cancelled")
    listed = api.get(control_url(session)).json()
    assert listed["object"] == "list" and listed["total_count"] == 3 and listed["has_more"] is False
    assert listed["data"][1]["id"] == str(new.id) and listed["data"][2]["id"] == str(old.id)
    assert [c["id"] for c in api.get(control_url(session, "?status=pending")).json()["data"]] == [str(new.id)]
    assert [c["id"] for c in api.get(control_url(session, "?commandType=pause")).json()["data"]] == [str(old.id)]
    assert api.get(control_url(session, "?status=done")).status_code == 400
    assert api.get(control_url(session, "?commandType=reboot")).status_code == 400
    assert api.get(control_url(session, "?limit=1")).json()["has_more"] is True


# --- paths, users, device tokens ---


def test_command_under_another_thread_or_session_is_404(api, user, session, device):
    command = make_command(session)
    sibling = local_session_create(user=user, thread=session.thread, device=device, status="running")
    other_thread = thread_create(user=user)
    elsewhere = local_session_create(user=user, thread=other_thread, device=device, status="running")
    wrong_paths = [
        f"/v1/threads/{session.thread_id}/local-sessions/{sibling.id}/control/{command.id}",
        f"/v1/threads/{other_thread.id}/local-sessions/{session.id}/control/{command.id}",
        f"/v1/threads/{other_thread.id}/local-sessions/{elsewhere.id}/control/{command.id}",
        f"/v1/threads/{session.thread_id}/local-sessions/{session.id}/control/{uuid.uuid4()}",
        f"/v1/threads/{session.thread_id}/local-sessions/{session.id}/control/not-a-uuid",
    ]
    for path in wrong_paths:
        assert api.get(path).json() == NOT_FOUND, path
        assert api.post(f"{path}/ack", {"status": "completed"}, format="json").json() == NOT_FOUND, path
    # A session of another thread is not found either, for every session-level endpoint.
    moved = f"/v1/threads/{other_thread.id}/local-sessions/{session.id}/control"
    assert api.get(moved).status_code == 404
    assert api.get(f"{moved}/poll").status_code == 404
    assert api.post(moved, {"commandType": "pause"}, format="json").status_code == 404
    command.refresh_from_db()
    assert command.status == "pending" and ControlCommand.objects.count() == 1


def test_other_users_commands_are_404(other_api, session):
    command = make_command(session)
    assert other_api.get(control_url(session)).json() == NOT_FOUND
    assert other_api.get(control_url(session, "/poll")).json() == NOT_FOUND
    assert other_api.get(command_url(command)).json() == NOT_FOUND
    assert other_api.post(command_url(command, "/ack"), {}, format="json").json() == NOT_FOUND
    response = other_api.post(control_url(session), {"commandType": "pause"}, format="json")
    assert response.json() == NOT_FOUND
    command.refresh_from_db()
    assert command.status == "pending" and ControlCommand.objects.count() == 1


def test_device_token_works_only_with_sessions_on_its_device(device_api, user, session):
    command = make_command(session)
    assert device_api.get(control_url(session, "/poll")).json()["total_count"] == 1
    assert device_api.get(control_url(session)).status_code == 200
    assert device_api.get(command_url(command)).status_code == 200
    assert device_api.post(control_url(session), {"commandType": "pause"}, format="json").status_code == 201
    assert device_api.post(command_url(command, "/ack"), {}, format="json").status_code == 200

    desktop = Device.objects.create(user=user, name="desktop")
    desktop_api = make_client(make_token(user, device=desktop))
    assert desktop_api.get(control_url(session)).json() == NOT_FOUND
    assert desktop_api.get(control_url(session, "/poll")).json() == NOT_FOUND
    assert desktop_api.get(command_url(command)).json() == NOT_FOUND
    assert desktop_api.post(command_url(command, "/ack"), {"status": "completed"}, format="json").json() == NOT_FOUND
    assert desktop_api.post(control_url(session), {"commandType": "cancel"}, format="json").json() == NOT_FOUND
    command.refresh_from_db()
    assert command.status == "acknowledged" and ControlCommand.objects.count() == 2


def test_unauthenticated_is_401(anon, session):
    command = make_command(session)
    for response in (
        anon.get(control_url(session)),
        anon.get(control_url(session, "/poll")),
        anon.post(command_url(command, "/ack"), {}, format="json"),
        anon.get("/v1/threads"),
    ):
        assert response.status_code == 401 and response.json()["code"] == "unauthorized"


# --- poll ---


def test_poll_returns_pending_commands_oldest_first(api, session):
    first = make_command(session, "pause")
    make_command(session, "message", status="acknowledged")
    second = make_command(session, "message")
    third = make_command(session, "cancel")
    body = api.get(control_url(session, "/poll")).json()
    assert body["object"] == "list" and body["total_count"] == 3 and body["has_more"] is False
    assert [c["id"] for c in body["data"]] == [str(first.id), str(second.id), str(third.id)]
    assert set(body["data"][0]) == seed_command_fields() | {"result"}
    limited = api.get(control_url(session, "/poll?limit=2")).json()
    assert [c["id"] for c in limited["data"]] == [str(first.id), str(second.id)]
    assert limited["total_count"] == 3 and limited["has_more"] is True


def test_poll_of_an_empty_session_is_an_empty_list_at_once(api, session):
    assert api.get(control_url(session, "/poll?wait=0")).json() == {
        "object": "list",
        "data": [],
        "total_count": 0,
        "has_more": False,
    }


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x", "wait=-1", "wait=abc", "wait=nan", "wait=inf"])
def test_poll_bad_params_are_400(api, session, query):
    response = api.get(control_url(session, f"/poll?{query}"))
    assert response.status_code == 400 and response.json()["code"] == "invalid_request"


def test_poll_query_counts(api, session, django_assert_max_num_queries):
    for _ in range(3):
        make_command(session)
    with django_assert_max_num_queries(2):  # auth, commands with their total
        assert api.get(control_url(session, "/poll?limit=2")).json()["total_count"] == 3
    ControlCommand.objects.update(status="cancelled", completed_at=timezone.now())
    with django_assert_max_num_queries(3):  # auth, commands, the session's existence
        assert api.get(control_url(session, "/poll")).json()["total_count"] == 0


def test_list_query_count(api, session, django_assert_max_num_queries):
    for _ in range(5):
        make_command(session)
    with django_assert_max_num_queries(4):  # auth, session, count, page
        assert api.get(control_url(session)).json()["total_count"] == 5
