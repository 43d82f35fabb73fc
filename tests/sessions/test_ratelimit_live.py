"""Rate limits across real server processes sharing one real redis-server, and the reference daemon's Retry-After."""

import logging
import threading

import httpx
import pytest

from acp.daemon.client import Api
from tests.conftest import make_token

pytestmark = pytest.mark.django_db(transaction=True)

# Day-long windows: a test this short cannot straddle a window's end (windows are aligned to the clock).
USER_BUDGET, DEVICE_BUDGET = 6, 4
LIMITS = {"ACP_RATELIMIT_USER": f"{USER_BUDGET}/day", "ACP_RATELIMIT_DEVICE": f"{DEVICE_BUDGET}/day"}


def get(server, path, token, **params):
    return httpx.get(f"{server.url}{path}", headers={"Authorization": f"Bearer {token}"}, params=params, timeout=10)


def assert_rate_limited(response, limit):
    assert response.status_code == 429, response.text
    assert response.json()["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) >= 1
    for prefix in ("", "X-"):
        assert response.headers[f"{prefix}RateLimit-Limit"] == str(limit)
        assert response.headers[f"{prefix}RateLimit-Remaining"] == "0"
        assert int(response.headers[f"{prefix}RateLimit-Reset"]) >= 1


def test_a_token_over_its_budget_is_refused_by_every_server_process(processes, user, other_user, device):
    store = processes.start_redis()
    env = {"ACP_RATELIMIT_STORAGE_URL": store.url, **LIMITS}
    servers = [processes.start_server(f"acp-ratelimit-{n}", **env) for n in "ab"]
    token, other_token, device_token = make_token(user), make_token(other_user), make_token(user, device=device)

    answers = [get(servers[n % 2], "/v1/projects", token) for n in range(USER_BUDGET)]  # alternating processes
    assert [r.status_code for r in answers] == [200] * USER_BUDGET
    assert [r.headers["RateLimit-Remaining"] for r in answers] == [str(n) for n in reversed(range(USER_BUDGET))]
    for server in servers:
        assert_rate_limited(get(server, "/v1/projects", token), USER_BUDGET)
        assert get(server, "/v1/projects", other_token).status_code == 200

    # The device token's budget is its own, and a long-poll's answer (given outside DRF) carries the headers too.
    polls = [get(servers[n % 2], f"/api/v1/machines/{device.id}/launches", device_token, wait=0.2)
             for n in range(DEVICE_BUDGET)]  # fmt: skip
    assert [(r.status_code, r.headers["RateLimit-Remaining"]) for r in polls] == [
        (200, str(n)) for n in reversed(range(DEVICE_BUDGET))
    ]
    for server in servers:
        assert_rate_limited(get(server, f"/api/v1/machines/{device.id}/launches", device_token), DEVICE_BUDGET)

    # The store gone: requests are let in, unlimited and without the headers, rather than refused or left waiting.
    store.stop()
    for server in servers:
        answer = get(server, "/v1/projects", token)
        assert answer.status_code == 200, answer.text
        assert "RateLimit-Limit" not in answer.headers
        assert "Rate-limit store" in server.log()


def test_the_reference_daemon_waits_as_long_as_retry_after_says(processes, user, device, caplog):
    server = processes.start_server(ACP_RATELIMIT_DEVICE="2/2seconds")  # one process: the memory storage
    stopping = threading.Event()
    api = Api(server.url, make_token(user, device=device), stopping, min_backoff=0.01, max_backoff=0.02)
    caplog.set_level(logging.WARNING, logger="acp.daemon")
    try:
        beats = [api.post(f"/v1/devices/{device.id}/heartbeat") for _ in range(5)]
    finally:
        api.close()
    assert [r.status_code for r in beats] == [200] * 5
    # 5 requests at 2 per window span 3 windows: at most one 429 at the end of each of the first two. A client
    # that only backed off (0.01 s → 0.02 s) would have been refused dozens of times while it waited.
    refusals = [record for record in caplog.records if "HTTP 429" in record.getMessage()]
    assert 1 <= len(refusals) <= 2, [record.getMessage() for record in refusals]
    assert all(record.args[-1] >= 1 for record in refusals)  # the pause it took: the Retry-After, not the backoff
