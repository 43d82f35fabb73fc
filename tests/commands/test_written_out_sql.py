"""A control command's create and ack written out (commands/services.py, acp/serving/rawsql.py): the same rows,
events and wake-ups as through the ORM (ACP_SERVING=stock), in fewer statements."""

import asyncio

import pytest
from django.db import transaction

from acp import serving
from acp.domain import NotFound
from acp.realtime import get_listener, machine_key
from commands.models import ControlCommand, Thread, ThreadEvent
from commands.services import (
    ONE_STATEMENT_EVENTS,
    command_notify_key,
    local_session_create,
    record_events,
    server_event,
    thread_create,
    thread_events_key,
)
from tests.commands.conftest import command_url, control_url, make_command


def create_ack_and_complete(api, session) -> ControlCommand:
    created = api.post(control_url(session), {"commandType": "message", "payload": {"text": "hi"}}, format="json")
    assert created.status_code == 201, created.content
    command = ControlCommand.objects.get(pk=created.json()["command"]["id"])
    assert api.post(command_url(command, "/ack"), {"status": "acknowledged"}, format="json").status_code == 200
    done = api.post(command_url(command, "/ack"), {"status": "completed", "payload": {"ok": True}}, format="json")
    assert done.status_code == 200, done.content
    return command


def stored(command: ControlCommand) -> dict:
    """What the create and the acks stored, with the ids and clock readings replaced by what they must be."""
    command.refresh_from_db()
    assert command.created_at <= command.acknowledged_at <= command.completed_at == command.updated_at
    events = list(ThreadEvent.objects.filter(thread_id=command.thread_id).order_by("sequence"))
    first = events[0].sequence
    assert [event.sequence for event in events] == list(range(first, first + len(events)))  # gapless
    assert Thread.objects.get(pk=command.thread_id).last_event_sequence == events[-1].sequence
    return {
        "command": {
            field.attname: getattr(command, field.attname)
            for field in ControlCommand._meta.concrete_fields
            if field.attname not in ("id", "user_id", "session_id", "thread_id") and not field.attname.endswith("_at")
        },
        "events": [
            (
                event.type,
                event.source,
                event.session_id == command.session_id,
                {k: v for k, v in event.data.items() if k not in ("commandId", "sessionId")},
                event.data.get("commandId") in (None, str(command.pk)),
                event.created_at is not None and event.occurred_at is None and event.client_event_id is None,
            )
            for event in events
        ],
    }


def test_a_create_and_its_acks_store_the_same_rows_and_events_in_both_modes(settings, api, user, device, environment):
    results = {}
    for mode in serving.MODES:
        settings.ACP_SERVING = mode
        thread = thread_create(user=user, environment=environment, title=mode)
        session = local_session_create(user=user, thread=thread, device=device, status="running")
        results[mode] = stored(create_ack_and_complete(api, session))
    assert results[serving.OPTIMISED] == results[serving.STOCK]
    assert [event[0] for event in results[serving.OPTIMISED]["events"]] == [
        "session.created",
        "command.queued",
        "command.acknowledged",
        "command.completed",
    ]
    assert results[serving.OPTIMISED]["command"]["result"] == {"ok": True}


# The test's transaction turns the service's into a SAVEPOINT and RELEASE, which count: as BEGIN and COMMIT would.
@pytest.mark.parametrize(
    ("mode", "create", "ack"),
    [
        # auth, the session's existence, savepoint, lock, insert, events with every NOTIFY, release
        (serving.OPTIMISED, 7, 6),
        # ... the events' sequence (with the thread's NOTIFY), their insert, the other NOTIFYs apart
        (serving.STOCK, 9, 7),
    ],
)
def test_a_create_and_an_ack_take_these_statements(
    settings, mode, create, ack, api, session, django_assert_num_queries
):
    settings.ACP_SERVING = mode
    with django_assert_num_queries(create):
        created = api.post(control_url(session), {"commandType": "message", "payload": {"text": "hi"}}, format="json")
    command = ControlCommand.objects.get(pk=created.json()["command"]["id"])
    with django_assert_num_queries(ack):  # auth, savepoint, lock, update, events, release
        assert api.post(command_url(command, "/ack"), {"status": "acknowledged"}, format="json").status_code == 200


@pytest.mark.parametrize("mode", serving.MODES)
def test_a_command_of_a_session_the_caller_may_not_see_is_not_found(settings, mode, device_api, other_session):
    """The written-out locks keep the scope: another user's session, or (device token) another device's."""
    settings.ACP_SERVING = mode
    body = {"commandType": "message", "payload": {"text": "hi"}}
    assert device_api.post(control_url(other_session), body, format="json").status_code == 404
    theirs = make_command(other_session)
    assert device_api.post(command_url(theirs, "/ack"), {"status": "acknowledged"}, format="json").status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == "pending"


@pytest.mark.parametrize("count", [3, ONE_STATEMENT_EVENTS + 1])  # in one statement, and a bulk job's batch
def test_several_events_keep_their_order(settings, session, count, django_assert_num_queries):
    settings.ACP_SERVING = serving.OPTIMISED
    thread_id = session.thread_id
    before = Thread.objects.get(pk=thread_id).last_event_sequence
    with transaction.atomic(), django_assert_num_queries(1 if count <= ONE_STATEMENT_EVENTS else 2):
        record_events(thread_id, *(server_event(f"test.{index}", session=session, n=index) for index in range(count)))
    events = list(ThreadEvent.objects.filter(thread_id=thread_id, sequence__gt=before).order_by("sequence"))
    expected = [(before + i + 1, f"test.{i}", i) for i in range(count)]
    assert [(e.sequence, e.type, e.data["n"]) for e in events] == expected


@pytest.mark.parametrize("mode", serving.MODES)
def test_recording_on_a_thread_that_is_gone_raises_not_found_and_stores_nothing(settings, mode, user):
    settings.ACP_SERVING = mode
    gone = thread_create(user=user, title="gone")
    gone_id = gone.pk
    gone.delete()
    with pytest.raises(NotFound), transaction.atomic():
        record_events(gone_id, server_event("test.gone"), notify=("anything",))
    assert not ThreadEvent.objects.filter(thread_id=gone_id).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", serving.MODES)
def test_a_create_wakes_its_sessions_poll_its_machines_channel_and_its_threads_streams(settings, mode, api, session):
    settings.ACP_SERVING = mode
    keys = (command_notify_key(session.pk), machine_key(session.device_id), thread_events_key(session.thread_id))
    subscriptions = [get_listener().subscribe(key) for key in keys]
    try:
        created = api.post(control_url(session), {"commandType": "message", "payload": {"text": "hi"}}, format="json")
        assert created.status_code == 201

        async def woken(subscription) -> bool:
            return await subscription.wait(5)

        assert [asyncio.run(woken(subscription)) for subscription in subscriptions] == [True, True, True]
    finally:
        for subscription in subscriptions:
            subscription.close()
