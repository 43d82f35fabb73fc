"""A thread's timeline goes with retention once its sessions have all ended and it has been quiet past the age."""

from datetime import timedelta

import pytest
from django.utils import timezone

from acp.cleanup import cleanup_sessions
from commands.models import LocalSession, Thread, ThreadEvent
from commands.services import NewEvent, thread_events_append

pytestmark = pytest.mark.django_db

OLD = timezone.now() - timedelta(days=45)


def thread_with(user, device, *, session_status, event_times):
    thread = Thread.objects.create(user=user, title=session_status)
    completed = OLD if session_status != "running" else None
    LocalSession.objects.create(user=user, thread=thread, device=device, status=session_status, completed_at=completed)
    for when in event_times:
        thread_events_append(thread_id=thread.pk, events=[NewEvent("output")], now=when)
    return thread


def test_only_quiet_timelines_of_ended_threads_go(user, device):
    done = thread_with(user, device, session_status="completed", event_times=[OLD, OLD])
    lately = thread_with(user, device, session_status="completed", event_times=[OLD, timezone.now()])
    live = thread_with(user, device, session_status="running", event_times=[OLD, OLD])

    summary = cleanup_sessions(older_than=timedelta(days=30), now=timezone.now())

    assert summary.counts["thread events"] == 2
    assert not ThreadEvent.objects.filter(thread=done).exists()
    assert ThreadEvent.objects.filter(thread=lately).count() == 2
    assert ThreadEvent.objects.filter(thread=live).count() == 2
    # the thread keeps counting: a later event never reuses a sequence a reader may have seen
    (later,) = thread_events_append(thread_id=done.pk, events=[NewEvent("note")])
    assert later.sequence == 3
