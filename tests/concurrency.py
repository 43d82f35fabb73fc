"""Real threads on real database connections, released together: the one helper every concurrency test uses."""

import threading

from django.db import connection


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
