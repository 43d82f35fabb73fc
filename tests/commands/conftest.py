"""Fixtures of the commands app: a thread, a running session on `device`, commands in any state."""

import pytest
from django.utils import timezone

from commands.choices import CommandStatus
from commands.models import ControlCommand
from commands.services import local_session_create, thread_create


def sessions_url(thread_id):
    return f"/v1/threads/{thread_id}/local-sessions"


def session_url(session, suffix=""):
    return f"/v1/threads/{session.thread_id}/local-sessions/{session.id}{suffix}"


def control_url(session, suffix=""):
    return session_url(session, "/control" + suffix)


def command_url(command, suffix=""):
    return f"/v1/threads/{command.thread_id}/local-sessions/{command.session_id}/control/{command.id}{suffix}"


def make_command(session, command_type="message", status=CommandStatus.PENDING, payload=None, **fields):
    """A command row in any state, with timestamps that satisfy the table's constraints."""
    now = fields.setdefault("created_at", timezone.now())
    if status in (CommandStatus.ACKNOWLEDGED, CommandStatus.COMPLETED):
        fields.setdefault("acknowledged_at", now)
    if status in (CommandStatus.COMPLETED, CommandStatus.CANCELLED):
        fields.setdefault("completed_at", now)
    if payload is None:
        payload = {"text": "hello"} if command_type == "message" else {}
    return ControlCommand.objects.create(
        user_id=session.user_id,
        session=session,
        thread_id=session.thread_id,
        command_type=command_type,
        payload=payload,
        status=status,
        **fields,
    )


@pytest.fixture
def thread(user, environment):
    return thread_create(user=user, environment=environment, title="fix the build")


@pytest.fixture
def session(user, thread, device):
    return local_session_create(user=user, thread=thread, device=device, status="running")


@pytest.fixture
def other_session(other_user, other_device):
    """A running session of another user."""
    their_thread = thread_create(user=other_user, title="theirs")
    return local_session_create(user=other_user, thread=their_thread, device=other_device, status="running")
