"""Pairing and revocation across real processes: two uvicorn servers on one database, and the reference daemon."""

import json
import os
import stat
import subprocess
import sys

import httpx
import pytest

from acp.models import Device
from acp.services import pairing_token_create
from tests.conftest import make_token, make_user
from tests.sessions.live import REPO_ROOT, ProcessManager, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def processes(transactional_db, tmp_path):
    manager = ProcessManager(tmp_path)
    try:
        yield manager
    finally:
        manager.stop_all()


def test_a_revoked_key_is_refused_at_once_by_every_process(processes):
    user = make_user("two-servers")
    admin_key = make_token(user)
    server_a, server_b = processes.start_server("acp-keys-a"), processes.start_server("acp-keys-b")
    created = httpx.post(f"{server_a.url}/v1/api-keys", json={"name": "short-lived"},
                         headers={"Authorization": f"Bearer {admin_key}"}, timeout=10)  # fmt: skip
    assert created.status_code == 201, created.text
    key, key_id = created.json()["key"], created.json()["apiKey"]["id"]
    for server in (server_a, server_b):  # both have seen (and could have cached) the key
        assert httpx.get(f"{server.url}/v1/projects", headers={"X-API-Key": key}, timeout=10).status_code == 200

    revoked = httpx.post(f"{server_a.url}/v1/api-keys/{key_id}/revoke", headers={"X-API-Key": admin_key}, timeout=10)
    assert revoked.status_code == 200 and revoked.json()["apiKey"]["revokedAt"]
    for server in (server_b, server_a):  # the very next request, on either process
        refused = httpx.get(f"{server.url}/v1/projects", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert (refused.status_code, refused.json()["code"]) == (401, "unauthorized")


def test_the_daemon_pairs_itself_and_runs_on_the_stored_key(processes, tmp_path):
    user = make_user("pairs-a-laptop")
    server = processes.start_server("acp-pairing")
    code = pairing_token_create(user=user, name="laptop").raw
    config = tmp_path / "home" / "acp" / "daemon.json"
    paired = subprocess.run(
        [sys.executable, "-m", "acp.daemon", "pair", "--url", server.url, "--code", code, "--name", "laptop",
         "--config", str(config)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert paired.returncode == 0, paired.stderr
    assert "Paired this machine as device 'laptop'" in paired.stdout and str(config) in paired.stdout
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
    entry = json.loads(config.read_text())["servers"][server.url]
    device = Device.objects.get(user=user)
    assert entry["deviceId"] == str(device.pk) and entry["apiKey"].startswith(entry["apiKeyPrefix"])

    again = subprocess.run(
        [sys.executable, "-m", "acp.daemon", "pair", "--url", server.url, "--code", code, "--config", str(config)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert again.returncode == 2 and "HTTP 409" in again.stderr
    assert json.loads(config.read_text())["servers"][server.url] == entry  # a refused pairing keeps the stored key

    daemon = processes.start_daemon(server, None, "--config", str(config))
    wait_until(lambda: Device.objects.get(pk=device.pk).is_online(), 30, 0.2, "the paired daemon's heartbeat")
    assert daemon.alive(), daemon.log()


def test_the_daemon_without_a_stored_key_says_how_to_pair(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "acp.daemon", "--url", "http://127.0.0.1:9", "--config", str(tmp_path / "none.json")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "acp-daemon pair --url http://127.0.0.1:9" in result.stderr
