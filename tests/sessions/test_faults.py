"""Faults caused for real against real server processes: a frozen LISTEN backend, PostgreSQL stopped and started,
every pooled connection killed, SIGTERM to a server holding waiters.

The database tests run on a PostgreSQL cluster of their own (`Postgres`), which they stop and start.
"""

import asyncio
import json
import os
import signal
import threading
import time

import httpx
import psycopg
import pytest
from django.db import connection

from acp.models import Project
from acp.realtime import get_listener
from sessions import services
from sessions.choices import LaunchStatus
from sessions.models import Launch
from tests.conftest import make_token
from tests.sessions.live import (
    Postgres,
    database_url_for_tests,
    listener_state,
    until_waiters,
    wait_for_waiters,
    wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def listener_backends() -> list[int]:
    """The pids of the LISTEN connections to the test database (this process's own listener is stopped)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'acp-listener' AND datname = current_database()"
        )
        return [pid for (pid,) in cursor.fetchall()]


# --- the listener ------------------------------------------------------------------------------------------------


def test_a_frozen_listener_backend_is_replaced_and_waiters_still_wake(processes, user, workspace, device):
    get_listener().stop()  # only the server's listener in pg_stat_activity
    interval, timeout = 1, 1
    server = processes.start_server(
        "acp-frozen-listener", ACP_LISTENER_CHECK_INTERVAL=interval, ACP_LISTENER_CHECK_TIMEOUT=timeout
    )
    result = {}

    def fetch():
        url = f"{server.url}/api/v1/machines/{device.id}/launches"
        response = httpx.get(url, params={"wait": 25}, headers=bearer(make_token(user, device=device)), timeout=30)
        result["response"], result["at"] = response, time.monotonic()

    waiter = threading.Thread(target=fetch, daemon=True)
    waiter.start()
    wait_for_waiters(server.url, 1)
    [frozen] = listener_backends()

    os.kill(frozen, signal.SIGSTOP)
    try:
        frozen_at = time.monotonic()
        wait_until(
            lambda: (
                [pid for pid in listener_backends() if pid != frozen]
                and listener_state(server.url)["connection"] == "connected"
            ),
            interval + timeout + 10,
            message="a new LISTEN connection",
        )
        replaced_after = time.monotonic() - frozen_at
        print(f"frozen listener backend replaced after {replaced_after:.1f}s")
        assert replaced_after < interval + timeout + 3  # a check is due within `interval`, fails after `timeout`
        assert waiter.is_alive()

        created_at = time.monotonic()
        launch = services.launch_create(user=user, workspace=workspace, machine=device)
        waiter.join(10)
    finally:
        os.kill(frozen, signal.SIGCONT)

    assert [item["id"] for item in result["response"].json()["data"]] == [str(launch.id)]
    assert result["at"] - created_at < 2  # woken by the new listener, not by a timer
    assert "did not answer in time" in server.log()


# --- the database down -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_postgres():
    """A migrated cluster of this module's own, and a user token on it."""
    postgres = Postgres.create()
    try:
        postgres.manage("migrate", "--noinput")
        token = postgres.manage(
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model; from acp.services import token_create; "
            "print(token_create(user=get_user_model().objects.create_user(username='ops')).raw)",
        ).split()[-1]
        yield postgres, token
    finally:
        postgres.remove()


def timed(request) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = request()
    return response, time.monotonic() - started


@pytest.mark.parametrize("pool", [True, False], ids=["pool", "no-pool"])
def test_with_postgresql_stopped_every_request_is_a_quick_503_and_the_next_after_its_restart_succeeds(
    processes, own_postgres, pool
):
    postgres, token = own_postgres
    name = "acp-outage"
    server = processes.start_server(
        name,
        DATABASE_URL=postgres.url(name),
        DATABASE_POOL=int(pool),
        DATABASE_POOL_TIMEOUT=2,
        DATABASE_CONNECT_TIMEOUT=2,
    )
    client = httpx.Client(base_url=server.url, headers=bearer(token), timeout=15)
    requests = {
        "list": lambda: client.get("/v1/projects"),
        "create": lambda: client.post("/v1/projects", json={"name": "during the outage"}),
        "long-poll": lambda: client.get("/api/v1/machines/00000000-0000-0000-0000-000000000000/launches?wait=5"),
        "channel": lambda: client.get(  # served by the batched way in (acp/serving/fast_streams.py)
            "/api/v1/machines/00000000-0000-0000-0000-000000000000/stream", headers={"Accept": "text/event-stream"}
        ),
    }
    assert client.get("/v1/projects").status_code == 200

    postgres.stop()
    try:
        for what, request in requests.items():
            response, took = timed(request)
            print(f"{what} with PostgreSQL stopped: {response.status_code} in {took:.2f}s")
            assert response.status_code == 503, (what, response.text)
            assert response.json()["code"] == "service_unavailable", what
            assert int(response.headers["Retry-After"]) > 0
            assert took < 5, (what, took)
        health, took = timed(lambda: client.get("/healthz"))
        assert health.status_code == 503 and took < 5
        assert health.json()["database"] == "unreachable" and "Retry-After" in health.headers
    finally:
        postgres.start()

    responses = [client.get("/v1/projects") for _ in range(5)]
    assert [response.status_code for response in responses] == [200] * 5, responses[0].text
    assert client.get("/healthz").status_code == 200
    assert "Internal Server Error" not in server.log()


@pytest.mark.parametrize("pool", [True, False], ids=["pool", "no-pool"])
def test_every_connection_killed_costs_no_request(processes, own_postgres, pool):
    postgres, token = own_postgres
    name = "acp-killed-connections"
    server = processes.start_server(name, DATABASE_URL=postgres.url(name), DATABASE_POOL=int(pool), DATABASE_POOL_MIN=4)
    client = httpx.Client(base_url=server.url, headers=bearer(token), timeout=15)
    assert [client.get("/v1/projects").status_code for _ in range(10)] == [200] * 10

    # Each kill waits for its backend to exit: a quiet connection given back moments ago is lent without a round trip
    # (acp/dbpool.py), so a kill still under way, before the backend's FATAL reaches its socket, can cost a request.
    killed = postgres.query(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = %s", [name]
    )
    assert killed or not pool  # the pool keeps connections; without it none outlives its request
    assert all(exited for (exited,) in killed), killed

    statuses = [client.get("/v1/projects").status_code for _ in range(50)]
    assert statuses == [200] * 50


SEED_DAEMON = """
import json
from django.contrib.auth import get_user_model
from django.utils import timezone
from acp.models import Device, Project
from acp.services import token_create
from sessions.models import Workspace
user = get_user_model().objects.create_user(username="daemon-owner")
device = Device.objects.create(user=user, name="laptop", platform="linux", last_seen_at=timezone.now())
project = Project.objects.create(user=user, name="acp")
workspace = Workspace.objects.create(user=user, name="acp", project=project, default_machine=device)
print(json.dumps({"user_token": token_create(user=user).raw, "device_token": token_create(user=user, device=device).raw,
                  "device_id": str(device.id), "workspace_id": str(workspace.id)}))
"""


def test_the_daemon_rides_through_a_database_outage_and_a_server_restart(processes, own_postgres):
    postgres, _ = own_postgres
    seed = json.loads(postgres.manage("shell", "-c", SEED_DAEMON).strip().splitlines()[-1])
    name = "acp-daemon-outage"
    server = processes.start_server(name, DATABASE_URL=postgres.url(name), DATABASE_POOL=1, DATABASE_POOL_TIMEOUT=2)
    daemon = processes.start_daemon(server, seed["device_token"], "--device", seed["device_id"])
    wait_until(lambda: "is online" in daemon.log(), 20, message="the daemon to start")

    postgres.stop()
    stopped_at = time.monotonic()
    try:
        wait_until(lambda: "HTTP 503" in daemon.log(), 15, message="the daemon to meet the outage")
        time.sleep(max(0.0, 5 - (time.monotonic() - stopped_at)))  # the outage lasts 5 s: its length is the test
    finally:
        postgres.start()
    server.stop()  # then a deploy: the daemon meets connection errors until the new server is up on the same port
    server = processes.start_server(
        f"{name}-2", port=server.port, DATABASE_URL=postgres.url(name), DATABASE_POOL=1, DATABASE_POOL_TIMEOUT=2
    )

    response = httpx.post(
        f"{server.url}/api/v1/workspaces/{seed['workspace_id']}/sessions",
        json={"initial_prompt": "after the outage"},
        headers=bearer(seed["user_token"]),
        timeout=30,
    )
    assert response.status_code == 200 and response.json()["status"] == "ok", response.text
    processes.agent_pids.add(response.json()["payload"]["pid"])
    assert daemon.alive()


# --- SIGTERM -----------------------------------------------------------------------------------------------------

WAITERS = 200


@pytest.mark.parametrize("gunicorn", [False, True], ids=["uvicorn", "gunicorn"])
def test_sigterm_answers_every_waiter_at_once_and_the_server_exits_in_its_grace(
    processes, user, workspace, second_device, gunicorn
):
    """SIGTERM to the server (gunicorn's master passes it on to its worker, as in a deploy)."""
    grace = 5
    server = processes.start_server(
        "acp-deploy", gunicorn=gunicorn, ACP_SHUTDOWN_GRACE=grace, ACP_LAUNCH_ACK_TIMEOUT=30
    )
    token = make_token(user)

    async def scenario():
        limits = httpx.Limits(max_connections=WAITERS + 10)
        async with httpx.AsyncClient(base_url=server.url, headers=bearer(token), limits=limits, timeout=40) as client:
            polls = [
                # Another machine than the launch's: its polls have nothing to fetch.
                asyncio.create_task(client.get(f"/api/v1/machines/{second_device.id}/launches", params={"wait": 30}))
                for _ in range(WAITERS)
            ]
            launch = asyncio.create_task(client.post(f"/api/v1/workspaces/{workspace.id}/sessions", json={}))
            await until_waiters(server.url, WAITERS + 1)
            server.popen.send_signal(signal.SIGTERM)
            signalled_at = time.monotonic()
            answers = await asyncio.gather(*polls, launch)
            return answers, time.monotonic() - signalled_at, signalled_at

    answers, answered_after, signalled_at = asyncio.run(scenario())
    *polls, launch = answers
    server.popen.wait(grace + 5)
    exited_after = time.monotonic() - signalled_at
    print(
        f"{WAITERS} waiters answered {answered_after:.2f}s after SIGTERM; the server exited after {exited_after:.2f}s"
    )

    assert [poll.status_code for poll in polls] == [200] * WAITERS
    assert all(poll.json()["data"] == [] for poll in polls)
    pending = Launch.objects.get()
    assert launch.status_code == 503
    assert launch.json() == {
        "status": "error",
        "payload": {"code": "server_shutting_down", "launch_id": str(pending.id)},
    }
    assert pending.status == LaunchStatus.PENDING  # the sweep (expire_launches) settles it
    assert answered_after < 2
    assert exited_after < grace


def test_a_request_still_running_after_the_grace_does_not_hold_the_server(processes, user):
    grace = 1
    name = "acp-deploy-grace"
    server = processes.start_server(name, ACP_SHUTDOWN_GRACE=grace)
    token = make_token(user)
    outcome = {}

    def create_project():
        try:
            outcome["response"] = httpx.post(
                f"{server.url}/v1/projects", json={"name": "blocked"}, headers=bearer(token), timeout=30
            )
        except httpx.TransportError as exc:
            outcome["error"] = exc

    with psycopg.connect(database_url_for_tests("acp-locker")) as locker:
        # The request blocks on this lock inside its INSERT: still running when the grace ends.
        locker.execute(f"LOCK TABLE {Project._meta.db_table} IN ACCESS EXCLUSIVE MODE")
        request = threading.Thread(target=create_project, daemon=True)
        request.start()
        wait_until(lambda: backend_waits_on_a_lock(name), 10, message="the request to wait on the lock")
        server.popen.send_signal(signal.SIGTERM)
        signalled_at = time.monotonic()
        server.popen.wait(grace + 10)
        exited_after = time.monotonic() - signalled_at
    request.join(5)
    print(f"with a request still running, the server exited {exited_after:.2f}s after SIGTERM (grace {grace}s)")
    assert grace <= exited_after < grace + 3
    assert "error" in outcome or outcome["response"].status_code >= 500  # cut: the client learns it failed


def backend_waits_on_a_lock(application_name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
            [application_name],
        )
        return cursor.fetchone() is not None
