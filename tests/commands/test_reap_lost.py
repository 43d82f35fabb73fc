"""Live local sessions whose daemon went silent end `failed` (daemon_lost); their open commands are cancelled."""

from datetime import timedelta

import pytest
from django.utils import timezone

from commands.models import LocalSession
from commands.services import local_sessions_reap_lost
from tests.commands.conftest import make_command

pytestmark = pytest.mark.django_db

LOST_AFTER = timedelta(minutes=10)


def live(thread, device, status="running", *, ago=None, **times):
    created_at = timezone.now() - (ago or timedelta(0))
    return LocalSession.objects.create(
        user_id=thread.user_id, thread=thread, device=device, status=status, created_at=created_at, **times
    )


def counts(summary):
    return summary.sessions, summary.commands


def test_silent_sessions_fail_and_their_open_commands_are_cancelled(thread, device):
    now = timezone.now()
    long_ago = now - timedelta(hours=1)
    silent = live(thread, device, ago=timedelta(hours=2), started_at=long_ago, last_heartbeat_at=long_ago)
    never_started = live(thread, device, "created", ago=timedelta(hours=1))
    started_no_beat = live(thread, device, ago=timedelta(hours=2), started_at=long_ago)
    paused = live(thread, device, ago=timedelta(hours=2), last_heartbeat_at=long_ago, paused_at=long_ago)
    beating = live(thread, device, ago=timedelta(hours=2), started_at=long_ago, last_heartbeat_at=now)
    young = live(thread, device, "created", ago=timedelta(minutes=1))
    ended = live(thread, device, "completed", ago=timedelta(hours=2), completed_at=long_ago)
    pending = make_command(silent)
    acknowledged = make_command(silent, status="acknowledged", acknowledged_at=long_ago)
    completed = make_command(silent, status="completed", acknowledged_at=long_ago, completed_at=long_ago)
    other_pending = make_command(beating)

    assert counts(local_sessions_reap_lost(lost_after=LOST_AFTER, now=now, dry_run=True)) == (4, 2)
    assert LocalSession.objects.filter(status="failed").count() == 0

    assert counts(local_sessions_reap_lost(lost_after=LOST_AFTER, now=now)) == (4, 2)
    for reaped in (silent, never_started, started_no_beat, paused):
        reaped.refresh_from_db()
        assert (reaped.status, reaped.error, reaped.completed_at, reaped.paused_at) == (
            "failed",
            "daemon_lost",
            now,
            None,
        )
    for kept, status in ((beating, "running"), (young, "created"), (ended, "completed")):
        kept.refresh_from_db()
        assert kept.status == status and kept.error is None
    for command, status in ((pending, "cancelled"), (acknowledged, "cancelled"), (completed, "completed")):
        command.refresh_from_db()
        assert command.status == status
    other_pending.refresh_from_db()
    assert other_pending.status == "pending"

    assert counts(local_sessions_reap_lost(lost_after=LOST_AFTER, now=now)) == (0, 0)
