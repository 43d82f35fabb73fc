"""What a waiting long-poll costs the server: no database connection and no thread of its own.

Each request borrows a thread from a small pool (acp/serving/request_threads.py) and a long-poll gives it back for
the wait (`released_request_thread`). A sync-only middleware would add a blocked thread per request, so every
middleware the optimised ASGI handler loads must be async-capable. With ACP_SERVING=stock, Django gives each request
a thread of its own: these figures are the optimised serving's.
"""

import asyncio
import importlib
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from acp.models import Device
from acp.serving import optimised
from acp.serving.middleware import inline
from tests.conftest import make_token, make_user
from tests.sessions.live import until_waiters

WAITERS = 300

pytestmark = pytest.mark.skipif(not optimised(), reason="what the optimised serving (ACP_SERVING) costs")


def test_every_middleware_can_run_async():
    """One sync-only middleware would park each async request on a thread for as long as it waits."""
    for dotted in inline(settings.MIDDLEWARE):
        module, name = dotted.rsplit(".", 1)
        middleware = getattr(importlib.import_module(module), name)
        assert getattr(middleware, "async_capable", False), f"{dotted} is sync-only"


def server_threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads: line")


def server_connections(application_name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [application_name])
        return cursor.fetchone()[0]


async def hold_long_polls(url: str, token: str, count: int, wait: int) -> list[int]:
    limits = httpx.Limits(max_connections=count + 10)
    async with httpx.AsyncClient(limits=limits, timeout=wait + 30) as client:
        headers = {"Authorization": f"Bearer {token}"}
        responses = await asyncio.gather(
            *(client.get(url, params={"wait": wait}, headers=headers) for _ in range(count))
        )
    return [response.status_code for response in responses]


@pytest.mark.django_db(transaction=True)
def test_waiters_hold_no_database_connection_and_no_thread(processes):
    user = make_user("waiter")
    device = Device.objects.create(user=user, name="d", last_seen_at=timezone.now())
    token = make_token(user)
    server = processes.start_server("acp-waiter-cost")
    url = f"{server.url}/api/v1/machines/{device.pk}/launches"

    loop = asyncio.new_event_loop()
    try:
        # Every kind of thread the server runs has worked once (requests, the database pool, the checks).
        assert loop.run_until_complete(hold_long_polls(url, token, 8, wait=0)) == [200] * 8
        idle_threads = server_threads(server.popen.pid)
        polls = loop.create_task(hold_long_polls(url, token, WAITERS, wait=30))
        loop.run_until_complete(until_waiters(server.url, WAITERS, timeout=25))
        assert server_connections("acp-listener") >= 1
        # Then only the listener's connection remains.
        connections_while_waiting = None
        for _ in range(100):
            loop.run_until_complete(asyncio.sleep(0.1))
            connections_while_waiting = server_connections("acp-waiter-cost")
            if connections_while_waiting <= 3:
                break
        assert not polls.done()
        threads_while_waiting = server_threads(server.popen.pid)
        statuses = loop.run_until_complete(polls)
    finally:
        loop.close()

    assert statuses == [200] * WAITERS
    print(f"{WAITERS} waiters: {idle_threads} threads idle, {threads_while_waiting} while waiting")
    # The checks run on the request threads' pool (background work's share): no thread is started for a waiter.
    # (Not `==`: a thread of start-up's may still be ending when the idle count is taken.)
    assert threads_while_waiting <= idle_threads, (idle_threads, threads_while_waiting)
    # The listener's connection, and none held by the waiters themselves.
    assert connections_while_waiting <= 3, connections_while_waiting
