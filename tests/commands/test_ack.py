"""POST …/control/{commandId}/ack: the state machine, timestamps, result, and effects on the session."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from commands.choices import COMMAND_ALLOWED_TRANSITIONS
from commands.models import ControlCommand
from tests.commands.conftest import command_url, make_command, session_url
from tests.commands.test_control import seed_command_fields

pytestmark = pytest.mark.django_db

STATES = ["pending", "acknowledged", "completed", "cancelled"]
# The SPEC's table, written out (not derived from the code under test): (from, to) -> legal move.
LEGAL = {
    ("pending", "acknowledged"),
    ("pending", "completed"),
    ("pending", "cancelled"),
    ("acknowledged", "completed"),
    ("acknowledged", "cancelled"),
}


def iso(moment):
    return moment.isoformat().replace("+00:00", "Z")


def ack(client, command, body=None):
    return client.post(command_url(command, "/ack"), body if body is not None else {}, format="json")


def test_the_code_table_matches_the_spec_table():
    assert {(a, b) for a, targets in COMMAND_ALLOWED_TRANSITIONS.items() for b in targets} == LEGAL


@pytest.mark.parametrize("current", STATES)
@pytest.mark.parametrize("target", STATES[1:])
def test_state_by_action(api, session, current, target):
    command = make_command(session, "message", status=current, created_at=timezone.now() - timedelta(seconds=5))
    before = ControlCommand.objects.get(pk=command.pk)
    with CaptureQueriesContext(connection) as queries:
        response = ack(api, command, {"status": target, "payload": {"ok": True}})
    after = ControlCommand.objects.get(pk=command.pk)
    writes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith(("UPDATE", "INSERT", "DELETE"))]

    if current == target:  # a repeat: 200, nothing changes, nothing is written
        assert response.status_code == 200, response.content
        assert response.json()["command"]["updatedAt"] == iso(before.updated_at)
        assert after.updated_at == before.updated_at and after.result is None and after.status == current
        assert writes == []
    elif (current, target) in LEGAL:
        assert response.status_code == 200, response.content
        body = response.json()["command"]
        assert body["status"] == target and after.status == target
        assert body["result"] == {"ok": True} and body["payload"] == {"text": "hello"}
        assert parse_datetime(body["updatedAt"]) > before.updated_at
        if target in ("acknowledged", "completed"):
            assert body["acknowledgedAt"] is not None
        if target in ("completed", "cancelled"):
            assert body["completedAt"] is not None
    else:
        assert response.status_code == 409, response.content
        error = response.json()
        assert error["code"] == "state_transition_conflict"
        assert error["details"]["command"]["status"] == current
        assert error["details"]["command"]["id"] == str(command.id)
        assert set(error["details"]["command"]) == seed_command_fields() | {"result"}
        assert after.updated_at == before.updated_at and after.status == current and after.result is None


def test_ack_without_body_acknowledges_now(api, session):
    command = make_command(session)
    started = timezone.now()
    response = api.post(command_url(command, "/ack"))
    assert response.status_code == 200
    body = response.json()["command"]
    assert body["status"] == "acknowledged" and body["completedAt"] is None and body["result"] is None
    assert started <= parse_datetime(body["acknowledgedAt"]) <= timezone.now()


def test_ack_response_has_exactly_the_seed_keys_plus_result(api, session):
    response = ack(api, make_command(session), {"status": "acknowledged"})
    assert set(response.json()) == {"command"}
    keys = set(response.json()["command"])
    assert seed_command_fields() <= keys and keys - seed_command_fields() == {"result"}


def test_pending_to_completed_sets_both_timestamps(api, session):
    command = make_command(session)
    body = ack(api, command, {"status": "completed"}).json()["command"]
    assert body["acknowledgedAt"] == body["completedAt"] is not None


def test_pending_to_completed_at_a_given_time_acknowledges_then_too(api, session):
    command = make_command(session, created_at=timezone.now() - timedelta(minutes=1))
    at = timezone.now() - timedelta(seconds=30)
    body = ack(api, command, {"status": "completed", "completedAt": iso(at)}).json()["command"]
    assert body["completedAt"] == iso(at) == body["acknowledgedAt"]


def test_given_timestamps_are_stored(api, session):
    command = make_command(session, created_at=timezone.now() - timedelta(minutes=2))
    acked_at = timezone.now() - timedelta(minutes=1)
    done_at = timezone.now() + timedelta(minutes=4)  # a daemon's clock may run a little ahead
    body = ack(api, command, {"status": "acknowledged", "acknowledgedAt": iso(acked_at)}).json()["command"]
    assert body["acknowledgedAt"] == iso(acked_at)
    body = ack(api, command, {"status": "completed", "completedAt": iso(done_at)}).json()["command"]
    assert body["acknowledgedAt"] == iso(acked_at) and body["completedAt"] == iso(done_at)


def test_result_is_kept_when_a_later_ack_has_no_payload(api, session):
    command = make_command(session, payload={"text": "original"})
    ack(api, command, {"payload": {"seen": 1}})
    body = ack(api, command, {"status": "completed"}).json()["command"]
    assert body["result"] == {"seen": 1} and body["payload"] == {"text": "original"}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"status": "pending"}, "status"),
        ({"status": "done"}, "status"),
        ({"status": ["completed"]}, "status"),
        ({"payload": [1]}, "payload"),
        ({"payload": "x"}, "payload"),
        ({"acknowledgedAt": "tuesday"}, "acknowledgedAt"),
        ({"completedAt": 12}, "completedAt"),
    ],
)
def test_ack_bad_input_is_400(api, session, body, field):
    command = make_command(session)
    response = ack(api, command, body)
    assert response.status_code == 400 and field in response.json()["details"], response.content
    command.refresh_from_db()
    assert command.status == "pending"


def test_ack_body_that_is_not_an_object_is_400(api, session):
    command = make_command(session)
    response = api.post(command_url(command, "/ack"), "[1]", content_type="application/json")
    assert response.status_code == 400


# --- timestamp rules ---


def _timestamp_cases(now):
    created = now - timedelta(minutes=10)
    return created, [
        # (status, body, field at fault)
        (
            "completed",
            {"acknowledgedAt": iso(now - timedelta(minutes=1)), "completedAt": iso(now - timedelta(minutes=2))},
            "completedAt",
        ),
        ("acknowledged", {"acknowledgedAt": iso(created - timedelta(seconds=1))}, "acknowledgedAt"),
        ("completed", {"completedAt": iso(created - timedelta(seconds=1))}, "completedAt"),
        ("cancelled", {"completedAt": iso(created - timedelta(minutes=1))}, "completedAt"),
        ("acknowledged", {"acknowledgedAt": iso(now + timedelta(minutes=6))}, "acknowledgedAt"),
        ("completed", {"completedAt": iso(now + timedelta(minutes=6))}, "completedAt"),
        ("cancelled", {"completedAt": iso(now + timedelta(hours=1))}, "completedAt"),
    ]


@pytest.mark.parametrize("case", range(7))
def test_timestamp_rules_are_400_and_change_nothing(api, session, case):
    created, cases = _timestamp_cases(timezone.now())
    status, body, field = cases[case]
    command = make_command(session, created_at=created)
    response = ack(api, command, {"status": status, **body})
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_request" and field in response.json()["details"]
    command.refresh_from_db()
    assert command.status == "pending" and command.acknowledged_at is None


def test_completed_before_the_stored_acknowledgement_is_400(api, session):
    command = make_command(session, created_at=timezone.now() - timedelta(minutes=5))
    ack(api, command, {"acknowledgedAt": iso(timezone.now() - timedelta(minutes=1))})
    response = ack(api, command, {"status": "completed", "completedAt": iso(timezone.now() - timedelta(minutes=2))})
    assert response.status_code == 400 and "completedAt" in response.json()["details"]
    command.refresh_from_db()
    assert command.status == "acknowledged"


# --- effects on the session ---


def test_completing_pause_and_resume_toggles_paused_at(api, session):
    pause = make_command(session, "pause")
    ack(api, pause, {"status": "acknowledged"})
    session.refresh_from_db()
    assert session.paused_at is None  # only completion pauses
    body = ack(api, pause, {"status": "completed"}).json()["command"]
    session.refresh_from_db()
    assert session.paused_at is not None and iso(session.paused_at) == body["completedAt"]
    assert api.get(session_url(session)).json()["session"]["pausedAt"] == body["completedAt"]

    resume = api.post(session_url(session, "/control"), {"commandType": "resume"}, format="json").json()["command"]
    resume = ControlCommand.objects.get(pk=resume["id"])
    ack(api, resume, {"status": "completed"})
    session.refresh_from_db()
    assert session.paused_at is None and session.status == "running"


def test_cancelled_pause_does_not_pause(api, session):
    ack(api, make_command(session, "pause"), {"status": "cancelled"})
    session.refresh_from_db()
    assert session.paused_at is None


def test_completing_cancel_ends_the_session_and_cancels_pending_commands(api, session):
    cancel = make_command(session, "cancel")
    waiting = make_command(session, "message")
    in_flight = make_command(session, "pause", status="acknowledged")
    response = ack(api, cancel, {"status": "completed", "payload": {"exit": 130}})
    assert response.status_code == 200 and response.json()["command"]["status"] == "completed"
    session.refresh_from_db()
    assert session.status == "cancelled" and session.completed_at is not None and session.paused_at is None
    assert ControlCommand.objects.get(pk=waiting.pk).status == "cancelled"
    assert ControlCommand.objects.get(pk=in_flight.pk).status == "acknowledged"
    # The ended session takes no more commands.
    assert (
        api.post(
            session_url(session, "/control"), {"commandType": "message", "payload": {"text": "x"}}, format="json"
        ).status_code
        == 409
    )


def test_acknowledging_cancel_does_not_end_the_session(api, session):
    ack(api, make_command(session, "cancel"), {"status": "acknowledged"})
    session.refresh_from_db()
    assert session.status == "running"


def test_late_completion_on_an_ended_session_changes_only_the_command(api, session):
    pause = make_command(session, "pause", status="acknowledged")
    cancel = make_command(session, "cancel", status="acknowledged")
    api.post(session_url(session, "/complete"), {"status": "failed"}, format="json")
    assert ack(api, pause, {"status": "completed"}).status_code == 200
    assert ack(api, cancel, {"status": "completed"}).status_code == 200
    session.refresh_from_db()
    assert session.status == "failed" and session.paused_at is None


# The test's transaction turns the service's into a SAVEPOINT and RELEASE, which count: as BEGIN and COMMIT would.
def test_ack_query_counts(api, session, django_assert_max_num_queries):
    command = make_command(session, "message")
    # a move also records its event on the thread's timeline: two statements (sequence + notify, insert)
    with django_assert_max_num_queries(8):
        assert ack(api, command, {"status": "acknowledged"}).status_code == 200
    with django_assert_max_num_queries(6):  # a repeat records nothing
        assert ack(api, command, {"status": "acknowledged"}).status_code == 200
    with django_assert_max_num_queries(8):
        assert ack(api, command, {"status": "cancelled"}).status_code == 200
    with django_assert_max_num_queries(6):
        assert ack(api, command, {"status": "completed"}).status_code == 409
    pause = make_command(session, "pause")
    with django_assert_max_num_queries(8):
        assert ack(api, pause, {"status": "completed"}).status_code == 200
    make_command(session, "message")
    cancel = make_command(session, "cancel")
    # auth, savepoint, lock, which are pending, command and pending ones, end session, events (2), release
    with django_assert_max_num_queries(9):
        assert ack(api, cancel, {"status": "completed"}).status_code == 200
    assert ControlCommand.objects.filter(status="pending").count() == 0
