"""The timeline API: ingest (`POST …/events/ingest`) and read (`GET …/events`)."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from acp.models import Device
from commands.models import ThreadEvent
from commands.services import local_session_create, thread_create
from tests.conftest import make_client, make_token

pytestmark = pytest.mark.django_db


def events_url(thread, suffix=""):
    return f"/v1/threads/{thread.id}/events{suffix}"


def ingest(client, thread, events):
    return client.post(events_url(thread, "/ingest"), {"events": events}, format="json")


def test_ingest_stores_in_order_and_reads_back(device_api, thread, session):
    sent = [
        {"type": "output", "sessionId": str(session.id), "data": {"line": "hello"}, "clientEventId": "c1"},
        {"type": "output", "data": {"line": "world"}, "occurredAt": timezone.now().isoformat()},
    ]
    response = ingest(device_api, thread, sent)
    assert response.status_code == 200, response.json()
    assert response.json() == {"success": True, "eventsProcessed": 2, "persistedCount": 2}

    page = device_api.get(events_url(thread), {"source": "daemon"}).json()
    assert page["object"] == "list" and page["total_count"] == 2 and page["has_more"] is False
    first, second = page["data"]
    assert (first["sequence"], second["sequence"]) == (2, 3)  # 1 is the server's session.created
    assert first["type"] == "output" and first["source"] == "daemon" and first["data"] == {"line": "hello"}
    assert first["sessionId"] == str(session.id) and first["clientEventId"] == "c1"
    assert first["threadId"] == str(thread.id) and second["sessionId"] is None
    assert second["occurredAt"] is not None
    assert page["next_cursor"] == "3"


def test_a_retried_batch_stores_nothing_twice(device_api, thread, session):
    batch = [{"type": "output", "data": {"n": i}, "clientEventId": f"e{i}"} for i in range(3)]
    assert ingest(device_api, thread, batch).json()["persistedCount"] == 3
    again = ingest(device_api, thread, [*batch, {"type": "output", "clientEventId": "e3"}]).json()
    assert again == {"success": True, "eventsProcessed": 4, "persistedCount": 1}
    assert list(ThreadEvent.objects.filter(thread=thread, source="daemon").values_list("sequence", flat=True)) == [
        2,
        3,
        4,
        5,
    ]


def test_a_user_token_ingests_as_user(api, thread):
    assert ingest(api, thread, [{"type": "note", "data": {"text": "looking"}}]).status_code == 200
    assert ThreadEvent.objects.get(thread=thread, type="note").source == "user"


@pytest.mark.parametrize(
    "event, field",
    [
        ({"type": "output", "data": [1, 2]}, "data"),
        ({"type": "output", "data": "text"}, "data"),
        ({"type": "output", "data": None}, "data"),
        ({"type": ""}, "type"),
        ({"type": "has space"}, "type"),
        ({"type": 5}, "type"),
        ({"type": "x" * 65}, "type"),
        ({"data": {}}, "type"),
        ({"type": "output", "sessionId": "not-a-uuid"}, "sessionId"),
        ({"type": "output", "clientEventId": 7}, "clientEventId"),
        ({"type": "output", "occurredAt": "yesterday"}, "occurredAt"),
        ({"type": "output", "colour": "red"}, "colour"),
    ],
)
def test_bad_events_are_refused_and_nothing_is_stored(device_api, thread, session, event, field):
    response = ingest(device_api, thread, [{"type": "output", "data": {"ok": True}}, event])
    assert response.status_code == 400, response.json()
    assert field in json.dumps(response.json())
    assert not ThreadEvent.objects.exclude(source="server").exists()


def test_batch_and_size_limits(device_api, thread, session, settings):
    settings.ACP_EVENTS_PER_BATCH = 3
    settings.ACP_EVENT_MAX_BYTES = 100
    too_many = ingest(device_api, thread, [{"type": "output"}] * 4)
    assert too_many.status_code == 400 and "at most 3" in json.dumps(too_many.json())
    too_big = ingest(device_api, thread, [{"type": "output", "data": {"line": "x" * 200}}])
    assert too_big.status_code == 400 and "at most 100" in json.dumps(too_big.json())
    assert ingest(device_api, thread, []).status_code == 400
    assert device_api.post(events_url(thread, "/ingest"), {"evts": []}, format="json").status_code == 400
    assert not ThreadEvent.objects.exclude(source="server").exists()


def test_nul_bytes_are_refused(device_api, thread, session):
    body = '{"events": [{"type": "output", "data": {"line": "a\\u0000b"}}]}'
    response = device_api.post(events_url(thread, "/ingest"), body, content_type="application/json")
    assert response.status_code == 400
    assert not ThreadEvent.objects.exclude(source="server").exists()


def test_timestamps_in_the_future_and_duplicate_client_ids_are_refused(device_api, thread, session):
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    response = ingest(device_api, thread, [{"type": "output"}, {"type": "output", "occurredAt": future}])
    assert response.status_code == 400 and "events[1].occurredAt" in response.json()["details"]
    twice = ingest(device_api, thread, [{"type": "a", "clientEventId": "x"}, {"type": "b", "clientEventId": "x"}])
    assert twice.status_code == 400 and "events[1].clientEventId" in twice.json()["details"]
    assert not ThreadEvent.objects.exclude(source="server").exists()


def test_sessions_must_be_the_threads_and_the_callers(user, device_api, api, thread, session, other_session):
    their_session = ingest(device_api, thread, [{"type": "output", "sessionId": str(other_session.id)}])
    assert their_session.status_code == 400 and "events[0].sessionId" in their_session.json()["details"]
    other_thread = thread_create(user=user, title="another")
    elsewhere = local_session_create(user=user, thread=other_thread, device=session.device, status="running")
    assert ingest(api, thread, [{"type": "output", "sessionId": str(elsewhere.id)}]).status_code == 400
    # a device token's events name only its own device's sessions
    second = Device.objects.create(user=user, name="desktop", last_seen_at=timezone.now())
    on_second = local_session_create(user=user, thread=thread, device=second, status="running")
    assert ingest(device_api, thread, [{"type": "output", "sessionId": str(on_second.id)}]).status_code == 400
    assert ingest(api, thread, [{"type": "output", "sessionId": str(on_second.id)}]).status_code == 200


def test_who_may_ingest_and_read(user, thread, session, other_api):
    # another user's token, and a device token of a device without a session in the thread: 404, as for a stranger
    assert ingest(other_api, thread, [{"type": "output"}]).status_code == 404
    assert other_api.get(events_url(thread)).status_code == 404
    idle_device = Device.objects.create(user=user, name="idle", last_seen_at=timezone.now())
    idle_api = make_client(make_token(user, device=idle_device))
    assert ingest(idle_api, thread, [{"type": "output"}]).status_code == 404
    assert idle_api.get(events_url(thread)).status_code == 404
    assert not ThreadEvent.objects.exclude(source="server").exists()


@pytest.fixture
def timeline(api, thread, session):
    """Ten events: odd ones of `session` typed `output`, even ones `status`."""
    events = [
        {"type": "output" if i % 2 else "status", "data": {"i": i}, **({"sessionId": str(session.id)} if i % 2 else {})}
        for i in range(1, 11)
    ]
    assert ingest(api, thread, events).status_code == 200
    return events


def sequences(page):
    return [event["sequence"] for event in page["data"]]


def test_paging_with_after_cursor_before_and_limit(api, thread, timeline):
    # 1 is the server's session.created, 2–11 the ten ingested
    first = api.get(events_url(thread), {"limit": 4}).json()
    assert sequences(first) == [1, 2, 3, 4] and first["has_more"] is True and first["total_count"] == 11
    assert first["data"][0]["type"] == "session.created" and first["data"][0]["source"] == "server"
    second = api.get(events_url(thread), {"limit": 4, "cursor": first["next_cursor"]}).json()
    assert sequences(second) == [5, 6, 7, 8]
    assert sequences(api.get(events_url(thread), {"after": 9}).json()) == [10, 11]
    window = api.get(events_url(thread), {"after": 2, "before": 6}).json()
    assert sequences(window) == [3, 4, 5] and window["total_count"] == 3 and window["has_more"] is False
    empty = api.get(events_url(thread), {"after": 11}).json()
    assert empty["data"] == [] and empty["total_count"] == 0 and empty["next_cursor"] == "11"


def test_filters_are_honoured(api, thread, session, timeline):
    assert sequences(api.get(events_url(thread), {"type": "output"}).json()) == [2, 4, 6, 8, 10]
    assert sequences(api.get(events_url(thread), {"type": "output,status", "limit": 3}).json()) == [2, 3, 4]
    # the session's own events: its creation (1) and the odd ones
    assert sequences(api.get(events_url(thread), {"sessionId": str(session.id), "after": 5}).json()) == [6, 8, 10]
    assert api.get(events_url(thread), {"source": "user"}).json()["total_count"] == 10
    assert api.get(events_url(thread), {"source": "server"}).json()["total_count"] == 1
    assert api.get(events_url(thread), {"source": "daemon"}).json()["total_count"] == 0


@pytest.mark.parametrize(
    "query, field",
    [
        ({"after": "-1"}, "after"),
        ({"after": "x"}, "after"),
        ({"before": "0"}, "before"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"source": "robot"}, "source"),
        ({"sessionId": "nope"}, "sessionId"),
        ({"type": "a,,b"}, "type"),
        ({"type": ""}, "type"),
        ({"after": "1", "cursor": "2"}, "cursor"),
        ({"offset": "5"}, "offset"),
        ({"stream": "maybe"}, "stream"),
    ],
)
def test_bad_queries_are_refused(api, thread, query, field):
    response = api.get(events_url(thread), query)
    assert response.status_code == 400, response.json()
    assert field in response.json()["details"]


def test_a_repeated_parameter_is_refused(api, thread):
    response = api.get(events_url(thread) + "?type=a&type=b")
    assert response.status_code == 400 and "type" in response.json()["details"]


def test_reading_costs_a_bounded_number_of_queries(api, thread, timeline, django_assert_max_num_queries):
    with django_assert_max_num_queries(3):  # token, thread, page with its count
        assert len(api.get(events_url(thread), {"limit": 10}).json()["data"]) == 10


def test_appending_costs_two_statements(thread):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from commands.services import NewEvent, thread_events_append

    with CaptureQueriesContext(connection) as queries:
        thread_events_append(thread_id=thread.id, events=[NewEvent("a"), NewEvent("b")])
    assert len(queries) == 2, [q["sql"] for q in queries]


def test_the_schema_documents_the_three_operations(api):
    schema = api.get("/api/schema/", {"format": "json"}).json()
    events = schema["paths"]["/v1/threads/{threadId}/events"]["get"]
    assert set(events["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert {"after", "before", "cursor", "limit", "sessionId", "type", "source", "stream", "Last-Event-ID"} <= {
        parameter["name"] for parameter in events["parameters"]
    }
    ingest_op = schema["paths"]["/v1/threads/{threadId}/events/ingest"]["post"]
    body = ingest_op["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("ThreadEventIngestRequest")
    components = schema["components"]["schemas"]
    assert "events" in components["ThreadEventIngestRequest"]["properties"]
    assert "persistedCount" in components["ThreadEventIngestResult"]["properties"]


def test_with_client_event_ids_the_thread_is_locked_before_the_ids_are_read(thread):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from commands.services import NewEvent, thread_events_append

    with CaptureQueriesContext(connection) as queries:
        thread_events_append(thread_id=thread.id, events=[NewEvent("a", client_event_id="x")])
    statements = [query["sql"] for query in queries]
    assert "FOR NO KEY UPDATE" in statements[0] and "client_event_id" in statements[1], statements
    assert len(statements) == 4  # lock, known ids, sequence (+ notify), insert
