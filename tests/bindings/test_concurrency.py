"""The one-prepared invariant under real concurrency: threads, each with its own PostgreSQL connection.

These tests commit (transaction=True), so they also show the prepare's query count as production sees it:
there the service's transaction is the outermost one, with no savepoint around it.
"""

import functools
import threading
from collections import Counter

import pytest
from django.db import connection, transaction

from acp.serving import optimised
from bindings.models import SyncSession
from tests.bindings.helpers import key_of, sessions_url
from tests.concurrency import run_concurrently, wait_until_a_backend_waits_for_a_lock
from tests.conftest import make_client, make_token

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 20
PLAN = {"files": ["a", "b"], "base": "snap"}


def run_together(count, work):
    """Run work(i) in `count` threads released at once; return their results in order (a failure fails the test)."""
    results = run_concurrently([functools.partial(work, i) for i in range(count)])
    errors = [result for result in results if isinstance(result, Exception)]
    assert not errors, errors
    return results


@pytest.fixture
def raw_token(user):
    return make_token(user)


def prepare_in_thread(raw_token, direction, binding_id, signature, plan):
    client = make_client(raw_token)
    response = client.post(
        sessions_url(direction, binding_id), {"planSignature": signature, "plan": plan}, format="json"
    )
    body = response.json()
    return response.status_code, body


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_identical_concurrent_prepares_make_one_row(binding, raw_token, direction):
    results = run_together(THREADS, lambda i: prepare_in_thread(raw_token, direction, binding.id, "same", PLAN))

    statuses = Counter(status for status, _ in results)
    assert statuses == {201: 1, 200: THREADS - 1}, results
    ids = {body[key_of(direction)]["id"] for _, body in results}
    assert len(ids) == 1
    assert [body["created"] for status, body in results if status == 201] == [True]
    assert SyncSession.objects.count() == 1
    assert SyncSession.objects.get().status == "prepared"


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_concurrent_prepares_with_different_signatures_leave_exactly_one_prepared(binding, raw_token, direction):
    def work(index):
        signature = f"sig-{index % 5}"
        return prepare_in_thread(raw_token, direction, binding.id, signature, {"signature": signature})

    results = run_together(THREADS, work)

    statuses = Counter(status for status, _ in results)
    assert set(statuses) <= {200, 201}, results
    assert statuses[201] >= 5  # each signature is new at least once
    rows = Counter(SyncSession.objects.values_list("status", flat=True))
    assert rows["prepared"] == 1
    assert rows["superseded"] == statuses[201] - 1
    assert sum(rows.values()) == statuses[201]
    # Every answer, created or reused, is a session of the signature and plan that request sent.
    for index, (_, body) in enumerate(results):
        session = body[key_of(direction)]
        assert session["planSignature"] == f"sig-{index % 5}"
        assert session["plan"] == {"signature": session["planSignature"]}


def test_concurrent_push_and_pull_prepares_do_not_interfere(binding, raw_token):
    results = run_together(
        THREADS,
        lambda i: prepare_in_thread(raw_token, ("push", "pull")[i % 2], binding.id, f"s{i % 4}", {"n": i % 4}),
    )
    assert {status for status, _ in results} <= {200, 201}
    prepared = SyncSession.objects.filter(status="prepared")
    assert sorted(prepared.values_list("direction", flat=True)) == ["pull", "push"]


@pytest.mark.parametrize(
    ("signature", "plan", "expected_status"), [("theirs", PLAN, 200), ("ours", {"other": "plan"}, 201)]
)
def test_a_writer_that_bypasses_the_binding_lock_meets_the_constraint_and_the_answer_is_still_right(
    binding, raw_token, signature, plan, expected_status
):
    """A row inserted without the binding lock (by another code path) and committed while our prepare is
    inserting: the unique constraint makes our insert fail, and the prepare answers from the committed state."""
    inserted, release = threading.Event(), threading.Event()
    intruder_id = {}

    def intruder():
        try:
            with transaction.atomic():
                session = SyncSession.objects.create(
                    user_id=binding.user_id,
                    workspace_binding=binding,
                    direction="push",
                    device_id=binding.device_id,
                    environment_id=binding.environment_id,
                    plan_signature="theirs",
                    plan=PLAN,
                )
                intruder_id["id"] = str(session.id)
                inserted.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    outcome = {}

    def preparer():
        try:
            outcome["result"] = prepare_in_thread(raw_token, "push", binding.id, signature, plan)
        finally:
            connection.close()

    other = threading.Thread(target=intruder)
    other.start()
    assert inserted.wait(timeout=15)
    ours = threading.Thread(target=preparer)
    ours.start()
    try:
        wait_until_a_backend_waits_for_a_lock()  # our INSERT waits on the intruder's uncommitted row
    finally:
        release.set()
        other.join(timeout=30)
        ours.join(timeout=30)

    status, body = outcome["result"]
    assert status == expected_status, body
    rows = dict(SyncSession.objects.values_list("plan_signature", "status"))
    if expected_status == 200:
        assert body["pushSession"]["id"] == intruder_id["id"]
        assert rows == {"theirs": "prepared"}
    else:
        assert rows == {"theirs": "superseded", "ours": "prepared"}


def test_prepare_query_count(binding, raw_token, django_assert_max_num_queries):
    client = make_client(raw_token)
    url = sessions_url("push", binding.id)
    with django_assert_max_num_queries(6):  # create: auth, lock binding, read prepared, insert
        assert client.post(url, {"planSignature": "a", "plan": PLAN}, format="json").status_code == 201
    with django_assert_max_num_queries(6):  # reuse: auth, lock binding, read prepared
        assert client.post(url, {"planSignature": "a", "plan": PLAN}, format="json").status_code == 200
    # supersede: auth, lock binding, read prepared and update it (one statement unless ACP_SERVING=stock), insert
    with django_assert_max_num_queries(6 if optimised() else 7):
        assert client.post(url, {"planSignature": "b", "plan": PLAN}, format="json").status_code == 201


def test_a_session_cancelled_while_a_prepare_supersedes_it_stays_cancelled(binding, raw_token):
    """The supersede step re-checks the row it waited for: a cancel that commits first wins."""
    client = make_client(raw_token)
    first = client.post(sessions_url("push", binding.id), {"planSignature": "a", "plan": PLAN}, format="json")
    first_id = first.json()["pushSession"]["id"]
    locked, release = threading.Event(), threading.Event()

    def canceller():
        try:
            with transaction.atomic():
                session = SyncSession.objects.select_for_update().get(pk=first_id)
                locked.set()
                release.wait(timeout=30)
                session.status = "cancelled"
                session.save(update_fields=["status", "updated_at"])
        finally:
            connection.close()

    outcome = {}

    def preparer():
        try:
            outcome["result"] = prepare_in_thread(raw_token, "push", binding.id, "b", PLAN)
        finally:
            connection.close()

    other = threading.Thread(target=canceller)
    other.start()
    assert locked.wait(timeout=15)
    ours = threading.Thread(target=preparer)
    ours.start()
    try:
        wait_until_a_backend_waits_for_a_lock()
    finally:
        release.set()
        other.join(timeout=30)
        ours.join(timeout=30)

    status, body = outcome["result"]
    assert status == 201, body
    assert dict(SyncSession.objects.values_list("plan_signature", "status")) == {"a": "cancelled", "b": "prepared"}
