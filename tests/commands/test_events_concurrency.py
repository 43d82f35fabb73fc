"""Gapless per-thread sequences under real concurrency: each writer is a thread with its own PostgreSQL connection."""

import pytest
from django.db import IntegrityError

from commands.models import ThreadEvent
from commands.services import NewEvent, thread_events_append
from tests.concurrency import run_concurrently
from tests.conftest import make_client, make_token

pytestmark = pytest.mark.django_db(transaction=True)

WRITERS = 20
PER_BATCH = 5


def ingest_call(raw_token, thread, batch):
    def call():
        response = make_client(raw_token).post(
            f"/v1/threads/{thread.id}/events/ingest", {"events": batch}, format="json"
        )
        return response.status_code, response.json()

    return call


def test_twenty_writers_get_sequences_one_to_n_without_gap_or_duplicate(user, device, thread, session):
    token = make_token(user, device=device)
    batches = [
        [{"type": "output", "data": {"writer": w, "i": i}, "clientEventId": f"w{w}-{i}"} for i in range(PER_BATCH)]
        for w in range(WRITERS)
    ]
    results = run_concurrently([ingest_call(token, thread, batch) for batch in batches])
    assert all(status == 200 and body["persistedCount"] == PER_BATCH for status, body in results), results

    every = list(ThreadEvent.objects.filter(thread=thread).order_by("sequence").values_list("sequence", flat=True))
    assert every == list(range(1, WRITERS * PER_BATCH + 2))  # 1 is the server's session.created
    rows = list(ThreadEvent.objects.filter(thread=thread, source="daemon").values_list("sequence", "data"))
    assert len(rows) == WRITERS * PER_BATCH
    # each batch is contiguous and in its own order: a writer holds the thread's row while it appends
    for writer in range(WRITERS):
        mine = [sequence for sequence, data in rows if data["writer"] == writer]
        assert mine == list(range(mine[0], mine[0] + PER_BATCH))
    thread.refresh_from_db()
    assert thread.last_event_sequence == WRITERS * PER_BATCH + 1

    # every batch retried, all at once: nothing is stored twice
    again = run_concurrently([ingest_call(token, thread, batch) for batch in batches])
    assert all(status == 200 and body["persistedCount"] == 0 for status, body in again), again
    assert ThreadEvent.objects.filter(thread=thread).count() == WRITERS * PER_BATCH + 1


def test_the_same_new_batch_sent_twice_at_once_is_stored_once(user, device, thread, session):
    token = make_token(user, device=device)
    batch = [{"type": "output", "data": {"i": i}, "clientEventId": f"same-{i}"} for i in range(10)]
    results = run_concurrently([ingest_call(token, thread, batch) for _ in range(8)])
    assert sorted(body["persistedCount"] for _, body in results) == [0] * 7 + [10]
    assert list(ThreadEvent.objects.filter(thread=thread).values_list("sequence", flat=True)) == list(range(1, 12))


def test_the_database_refuses_a_duplicate_sequence_or_client_event_id(thread):
    thread_events_append(thread_id=thread.id, events=[NewEvent("a", client_event_id="c")])
    with pytest.raises(IntegrityError):
        ThreadEvent.objects.create(thread=thread, sequence=1, type="forged", source="server")
    with pytest.raises(IntegrityError):
        ThreadEvent.objects.create(thread=thread, sequence=2, type="forged", source="server", client_event_id="c")
