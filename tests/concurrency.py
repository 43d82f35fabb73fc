"""Real threads on real database connections: the helpers the concurrency tests share (released together, started
one at a time, waiting for a lock wait, probing whether a row is locked)."""

import threading
import time

from django.db import DatabaseError, connection, transaction


def run_concurrently(calls, *, timeout: float = 60):
    """Run each call in its own thread, released together by a barrier; return their results in order.

    A call that raised has its exception as its result (the test's assertions surface it). Each thread closes its
    database connection, so the test database can be dropped afterwards.
    """
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def worker(index, call):
        try:
            barrier.wait(timeout=10)
            results[index] = call()
        except Exception as exc:  # surfaced by the caller's assertions
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), "a call never returned"
    return results


def started(call):
    """Start `call` in a thread of its own (its own database connection, closed when it ends); return a function that
    waits for it and returns its result, or raises what it raised."""
    outcome = {}

    def worker():
        try:
            outcome["result"] = call()
        except Exception as exc:  # raised to the caller by the function returned
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()

    def result(timeout: float = 30):
        thread.join(timeout=timeout)
        assert not thread.is_alive(), "the call never returned"
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    return result


def wait_until_a_backend_waits_for_a_lock(timeout: float = 15) -> None:
    """Wait until some connection to the test database waits for a lock (PostgreSQL). Within a transaction too:
    the activity it reads is read afresh each time (a transaction keeps its first read otherwise)."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.02)
    raise AssertionError("no connection waited for a lock")


def row_is_locked(model, pk) -> bool:
    """Whether another transaction holds a lock on the row (asked from a connection of its own, which takes and
    gives back the lock at once if it is free)."""

    def try_to_lock():
        try:
            with transaction.atomic():
                list(model.objects.select_for_update(nowait=True).filter(pk=pk).values_list("pk"))
        except DatabaseError:
            return True
        return False

    return started(try_to_lock)()
