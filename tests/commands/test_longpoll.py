"""GET …/control/poll?wait=S over real HTTP: uvicorn serving acp.asgi on the test database in another process.

The command is queued from this process, so the wake-up crosses processes through PostgreSQL NOTIFY, as in
production. The server process (and its LISTEN connection) is ended by the fixture, even when a test fails.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from django.db import connection

from acp.serving.http import PROTOCOL
from commands.services import command_enqueue
from tests.commands.conftest import control_url
from tests.conftest import make_token
from tests.sessions.live import wait_for_waiters

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _test_database_url() -> str:
    db = connection.settings_dict  # NAME is the test database here
    credentials = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{credentials}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory):
    """Base URL of a uvicorn process serving the app on the test database."""
    with django_db_blocker.unblock():
        database_url = _test_database_url()
    port = _free_port()
    log_path = tmp_path_factory.mktemp("uvicorn") / "server.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DEBUG": "0",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "test-only-secret-key-not-for-production",
        "SECURE_SSL_REDIRECT": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
    }
    command = [sys.executable, "-m", "uvicorn", "acp.asgi:application", "--http", PROTOCOL, "--host", "127.0.0.1",
               "--port", str(port)]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"uvicorn did not start:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.1)
        yield base
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _poll_in_thread(url: str, headers: dict) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run():
        started = time.monotonic()
        try:
            response = httpx.get(url, headers=headers, timeout=30)
            outcome["status"], outcome["body"] = response.status_code, response.json()
        except Exception as exc:  # reported by the test's assertions
            outcome["error"] = repr(exc)
        outcome["finished"] = time.monotonic()
        outcome["elapsed"] = outcome["finished"] - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_a_new_command_wakes_the_waiter_at_once(server, user, device, session):
    headers = {"Authorization": f"Bearer {make_token(user, device=device)}"}
    thread, outcome = _poll_in_thread(f"{server}{control_url(session, '/poll?wait=10')}", headers)
    wait_for_waiters(server, 1)
    assert thread.is_alive(), outcome

    queued_at = time.monotonic()
    command = command_enqueue(session=session, command_type="message", payload={"text": "wake up"})
    thread.join(timeout=12)

    assert not thread.is_alive() and "error" not in outcome, outcome
    assert outcome["status"] == 200
    assert [c["id"] for c in outcome["body"]["data"]] == [str(command.id)]
    assert outcome["body"]["total_count"] == 1 and outcome["body"]["object"] == "list"
    assert outcome["elapsed"] < 4, outcome  # well before wait=10 expires
    # Woken by NOTIFY, not by a periodic re-check (those are 10 s apart on PostgreSQL).
    assert outcome["finished"] - queued_at < 1.5, outcome


def test_a_waiter_on_an_empty_session_returns_an_empty_list_after_wait(server, user, device, session):
    headers = {"Authorization": f"Bearer {make_token(user, device=device)}"}
    thread, outcome = _poll_in_thread(f"{server}{control_url(session, '/poll?wait=1.5')}", headers)
    thread.join(timeout=10)
    assert "error" not in outcome, outcome
    assert outcome["status"] == 200
    assert outcome["body"] == {"object": "list", "data": [], "total_count": 0, "has_more": False}
    assert 1.4 <= outcome["elapsed"] < 5, outcome


def test_pending_commands_return_at_once_and_errors_do_not_wait(server, user, device, session, other_session):
    headers = {"Authorization": f"Bearer {make_token(user, device=device)}"}
    command_enqueue(session=session, command_type="pause")
    started = time.monotonic()
    response = httpx.get(f"{server}{control_url(session, '/poll?wait=10')}", headers=headers, timeout=15)
    assert response.status_code == 200 and response.json()["total_count"] == 1
    assert time.monotonic() - started < 3
    # Someone else's session is a 404 at once, not after the wait.
    started = time.monotonic()
    response = httpx.get(f"{server}{control_url(other_session, '/poll?wait=10')}", headers=headers, timeout=15)
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert time.monotonic() - started < 3
