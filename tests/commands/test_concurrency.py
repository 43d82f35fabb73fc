"""Races on real PostgreSQL connections: each thread is a client with its own connection."""

import random
from collections import Counter
from datetime import timedelta

import pytest

from acp.models import IdempotencyKey
from commands.models import ControlCommand, LocalSession
from commands.services import commands_expire
from tests.commands.conftest import command_url, control_url, make_command, session_url
from tests.concurrency import run_concurrently
from tests.conftest import make_client, make_token

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("command_type", ["message", "cancel", "pause"])
def test_ten_acks_racing_completed_against_cancelled(user, device, session, command_type):
    command = make_command(session, command_type)
    token = make_token(user, device=device)
    targets = ["completed", "cancelled"] * 5

    def ack(target):
        def call():
            response = make_client(token).post(command_url(command, "/ack"), {"status": target}, format="json")
            return target, response.status_code, response.json()

        return call

    results = run_concurrently([ack(target) for target in targets])
    assert not [r for r in results if isinstance(r, Exception)], results
    command.refresh_from_db()
    final = command.status
    assert final in ("completed", "cancelled")
    assert Counter(status for _, status, _ in results) == {200: 5, 409: 5}
    for target, status, body in results:
        assert status in (200, 409), body
        if status == 200:
            assert target == final and body["command"]["status"] == final
        else:
            assert target != final and body["code"] == "state_transition_conflict"
            assert body["details"]["command"]["status"] == final
    session.refresh_from_db()
    if command_type == "cancel":
        assert session.status == ("cancelled" if final == "completed" else "running")
    if command_type == "pause":
        assert (session.paused_at is not None) == (final == "completed")


def test_concurrent_requests_with_one_idempotency_key_make_one_command(user, session):
    token = make_token(user)

    def enqueue():
        response = make_client(token).post(
            control_url(session),
            {"commandType": "message", "payload": {"text": "once"}},
            format="json",
            HTTP_IDEMPOTENCY_KEY="same-key",
        )
        return response.status_code, response.json()

    results = run_concurrently([enqueue] * 8)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert {status for status, _ in results} == {201}
    assert len({body["command"]["id"] for _, body in results}) == 1
    assert ControlCommand.objects.count() == 1 and IdempotencyKey.objects.count() == 1


def test_ending_acking_enqueueing_and_expiring_at_once_never_deadlocks(user, device, session):
    """Every writer locks the session before its commands: mixed writers finish, and the invariant holds."""
    token = make_token(user, device=device)
    cancel = make_command(session, "cancel")
    messages = [make_command(session, "message") for _ in range(4)]
    rng = random.Random(7)

    def client():
        return make_client(token)

    calls = [
        lambda: client().post(session_url(session, "/complete"), {"status": "failed"}, format="json").status_code,
        lambda: client().post(command_url(cancel, "/ack"), {"status": "completed"}, format="json").status_code,
        lambda: commands_expire(older_than=timedelta(0)) and 200,  # a service, not a request: "200" when it returns
    ]
    for message in messages:
        calls.append(
            lambda m=message: (
                client()
                .post(command_url(m, "/ack"), {"status": rng.choice(["completed", "cancelled"])}, format="json")
                .status_code
            )
        )
        calls.append(
            lambda: (
                client()
                .post(control_url(session), {"commandType": "message", "payload": {"text": "x"}}, format="json")
                .status_code
            )
        )
    results = run_concurrently(calls)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert all(isinstance(r, int) and r < 500 for r in results), results

    session.refresh_from_db()
    assert session.status in ("failed", "cancelled")
    # A session that ended has no pending command left, whoever won.
    assert not ControlCommand.objects.filter(session=session, status="pending").exists()
    assert LocalSession.objects.get(pk=session.pk).paused_at is None
