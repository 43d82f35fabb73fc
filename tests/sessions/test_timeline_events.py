"""The server's own record on a thread's timeline: every launch, session and command move, written with the change."""

from datetime import timedelta

import pytest
from django.utils import timezone

from acp.models import Device
from commands.models import ControlCommand, LocalSession, Thread, ThreadEvent
from commands.services import (
    command_ack,
    command_cancel,
    command_enqueue,
    commands_expire,
    local_session_complete,
    local_sessions_reap_lost,
)
from sessions.models import Launch
from sessions.services import launch_acknowledge, launch_create, launch_time_out, launches_expire
from tests.sessions.conftest import make_launch

pytestmark = pytest.mark.django_db


@pytest.fixture
def offline_device(user):
    return Device.objects.create(user=user, name="asleep", last_seen_at=timezone.now() - timedelta(hours=1))


def timeline(thread_id, *, source="server"):
    """[(type, data)] of the thread's events, in sequence order (checked gapless)."""
    events = list(ThreadEvent.objects.filter(thread_id=thread_id).order_by("sequence"))
    assert [event.sequence for event in events] == list(range(1, len(events) + 1))
    return [(event.type, event.data) for event in events if event.source == source]


def types(thread_id):
    return [event_type for event_type, _ in timeline(thread_id)]


def test_launch_ack_pause_resume_message_cancel_reads_as_one_story(user, workspace, device):
    launch = launch_create(user=user, workspace=workspace, machine=device, initial_prompt="fix it")
    launch = launch_acknowledge(launch=launch, status="ok", payload={"pid": 1}).obj
    session, thread_id = launch.local_session, launch.thread_id

    pause = command_enqueue(session=session, command_type="pause")
    command_ack(session=session, command_id=pause.pk, status="completed")
    resume = command_enqueue(session=session, command_type="resume")
    command_ack(session=session, command_id=resume.pk)
    command_ack(session=session, command_id=resume.pk, status="completed")
    message = command_enqueue(session=session, command_type="message", payload={"text": "and the tests"})
    cancel = command_enqueue(session=session, command_type="cancel")
    command_ack(session=session, command_id=cancel.pk, status="completed", result={"signal": "TERM"})

    assert types(thread_id) == [
        "launch.requested", "session.created", "launch.acknowledged",
        "command.queued", "command.completed", "session.paused",
        "command.queued", "command.acknowledged", "command.completed", "session.resumed",
        "command.queued", "command.queued", "command.completed", "command.cancelled", "session.ended",
    ]  # fmt: skip
    events = timeline(thread_id)
    ids = {"launchId": str(launch.pk), "workspaceId": str(workspace.pk), "machineId": str(device.pk)}
    assert events[0][1] == ids
    assert events[2][1] == {**ids, "sessionId": str(session.pk)}
    assert events[3][1] == {"sessionId": str(session.pk), "commandId": str(pause.pk), "commandType": "pause",
                            "payload": {}}  # fmt: skip
    assert events[10][1]["payload"] == {"text": "and the tests"}
    assert events[12][1]["result"] == {"signal": "TERM"}
    assert events[13][1] == {"sessionId": str(session.pk), "commandId": str(message.pk), "commandType": "message",
                             "reason": "session_cancelled"}  # fmt: skip
    assert events[14][1]["status"] == "cancelled"
    assert ThreadEvent.objects.get(thread_id=thread_id, sequence=1).occurred_at == launch.created_at
    # each event names its session (but the launch request, recorded before the session existed)
    assert ThreadEvent.objects.filter(thread_id=thread_id, session__isnull=True).count() == 1


def test_a_repeat_records_nothing(user, workspace, device):
    launch = launch_acknowledge(launch=make_launch(workspace), status="ok", payload={}).obj
    command = command_enqueue(session=launch.local_session, command_type="message", payload={"text": "hi"})
    command_ack(session=launch.local_session, command_id=command.pk)
    before = ThreadEvent.objects.count()
    command_ack(session=launch.local_session, command_id=command.pk)
    launch_acknowledge(launch=launch, status="ok", payload={})
    assert ThreadEvent.objects.count() == before


def test_launch_failures_into_a_callers_thread(user, workspace, device, second_device, offline_device):
    thread = Thread.objects.create(user=user, title="mine")
    offline = launch_create(user=user, workspace=workspace, machine=offline_device, user_session=thread)
    refused = launch_create(user=user, workspace=workspace, machine=device, user_session=thread)
    launch_acknowledge(launch=refused, status="error", payload={"code": "no_agent"})
    timing_out = launch_create(user=user, workspace=workspace, machine=device, user_session=thread)
    launch_time_out(launch_id=timing_out.pk)
    expiring = launch_create(user=user, workspace=workspace, machine=second_device, user_session=thread)
    assert launches_expire(now=timezone.now() + timedelta(minutes=1)) == 1
    assert [(t, d["launchId"], d.get("errorCode")) for t, d in timeline(thread.pk)] == [
        ("launch.requested", str(offline.pk), "machine_offline"),
        ("launch.failed", str(offline.pk), "machine_offline"),
        ("launch.requested", str(refused.pk), None),
        ("launch.failed", str(refused.pk), "no_agent"),
        ("launch.requested", str(timing_out.pk), None),
        ("launch.timed_out", str(timing_out.pk), "daemon_timeout"),
        ("launch.requested", str(expiring.pk), None),
        ("launch.timed_out", str(expiring.pk), "daemon_timeout"),
    ]
    # a launch without a thread of its own fails on no timeline
    lone, recorded = make_launch(workspace), ThreadEvent.objects.count()
    launch_acknowledge(launch=lone, status="error", payload={})
    assert Launch.objects.get(pk=lone.pk).status == "failed" and ThreadEvent.objects.count() == recorded


def test_bulk_jobs_record_what_they_change(user, workspace, device):
    launch = launch_acknowledge(launch=make_launch(workspace), status="ok", payload={}).obj
    session = launch.local_session
    old = command_enqueue(session=session, command_type="message", payload={"text": "old"})
    ControlCommand.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=2))
    assert commands_expire(older_than=timedelta(hours=1)).commands == 1
    acknowledged = command_enqueue(session=session, command_type="message", payload={"text": "working"})
    command_ack(session=session, command_id=acknowledged.pk)
    LocalSession.objects.filter(pk=session.pk).update(last_heartbeat_at=timezone.now() - timedelta(hours=1))
    assert local_sessions_reap_lost(lost_after=timedelta(minutes=10)).sessions == 1
    events = timeline(launch.thread_id)
    assert [(t, d.get("commandId"), d.get("reason")) for t, d in events[3:]] == [
        ("command.queued", str(old.pk), None),
        ("command.cancelled", str(old.pk), "expired"),
        ("command.queued", str(acknowledged.pk), None),
        ("command.acknowledged", str(acknowledged.pk), None),
        ("command.cancelled", str(acknowledged.pk), "daemon_lost"),
        ("session.ended", None, None),
    ]
    assert events[-1][1] == {"sessionId": str(session.pk), "status": "failed", "error": "daemon_lost"}


def test_ending_a_session_and_supports_cancel(user, workspace, device):
    launch = launch_acknowledge(launch=make_launch(workspace), status="ok", payload={}).obj
    session = launch.local_session
    repaired = command_enqueue(session=session, command_type="message", payload={"text": "a"})
    command_cancel(command=repaired)
    pending = command_enqueue(session=session, command_type="message", payload={"text": "b"})
    local_session_complete(session=session, status="completed")
    assert [(t, d.get("commandId"), d.get("reason")) for t, d in timeline(launch.thread_id)[3:]] == [
        ("command.queued", str(repaired.pk), None),
        ("command.cancelled", str(repaired.pk), "support"),
        ("command.queued", str(pending.pk), None),
        ("command.cancelled", str(pending.pk), "session_ended"),
        ("session.ended", None, None),
    ]
