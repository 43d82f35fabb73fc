"""Rate limits per token in one process (the embedded default: memory storage, no extra service).

Across server processes sharing Redis: tests/sessions/test_ratelimit_live.py.
"""

import threading
import time

import pytest

from acp.api.throttling import MemoryWindows
from tests.conftest import make_client, make_token
from tests.sessions.live import free_port

HEADERS = ["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "X-RateLimit-Limit", "X-RateLimit-Remaining",
           "X-RateLimit-Reset"]  # fmt: skip


@pytest.fixture
def limits(settings):
    settings.ACP_RATELIMIT_ENABLED = True
    settings.ACP_RATELIMIT_STORAGE_URL = "memory://"
    # Hour windows: fixed windows end on the clock, and a test that crossed a minute's end would see a fresh budget.
    settings.ACP_RATELIMIT_USER = "3/hour"
    settings.ACP_RATELIMIT_DEVICE = "5/hour"
    return settings


def spend(client, path, times, method="get"):
    call = getattr(client, method)
    args = ({},) if method == "post" else ()
    return [call(path, *args, format="json") for _ in range(times)]


def assert_rate_limited(response, *, limit, bucket):
    assert response.status_code == 429, response.content
    body = response.json()
    assert body["code"] == "rate_limited"
    assert body["details"]["bucket"] == bucket
    assert body["details"]["limit"] == limit
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 3600
    assert body["details"]["retryAfter"] == retry_after
    assert response["RateLimit-Limit"] == response["X-RateLimit-Limit"] == str(limit)
    assert response["RateLimit-Remaining"] == response["X-RateLimit-Remaining"] == "0"
    assert int(response["RateLimit-Reset"]) == retry_after
    assert abs(int(response["X-RateLimit-Reset"]) - (time.time() + retry_after)) <= 2


def test_a_token_past_its_budget_gets_429_and_other_tokens_do_not(limits, api, other_api):
    responses = spend(api, "/v1/projects", 3)
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [r["RateLimit-Remaining"] for r in responses] == ["2", "1", "0"]
    assert all(r["RateLimit-Limit"] == "3" for r in responses)
    assert all(name in responses[0] for name in HEADERS)

    assert_rate_limited(api.get("/v1/projects"), limit=3, bucket="api")
    assert_rate_limited(api.get("/api/v1/workspaces"), limit=3, bucket="api")  # one budget for both API families

    other = other_api.get("/v1/projects")
    assert other.status_code == 200
    assert other["RateLimit-Remaining"] == "2"


def test_the_daemon_bucket_and_the_api_bucket_are_independent(limits, user, device):
    client = make_client(make_token(user))
    heartbeat = f"/v1/devices/{device.id}/heartbeat"
    spend(client, "/v1/projects", 3)
    assert_rate_limited(client.get("/v1/projects"), limit=3, bucket="api")
    beats = spend(client, heartbeat, 3, "post")  # the user's own daemon, on the same token
    assert [r.status_code for r in beats] == [200, 200, 200]
    assert_rate_limited(client.post(heartbeat, {}, format="json"), limit=3, bucket="daemon")

    fresh = make_client(make_token(user))
    spend(fresh, heartbeat, 3, "post")
    assert_rate_limited(fresh.post(heartbeat, {}, format="json"), limit=3, bucket="daemon")
    assert fresh.get("/v1/projects").status_code == 200


def test_a_device_token_has_the_device_budget(limits, device_api, device):
    beats = spend(device_api, f"/v1/devices/{device.id}/heartbeat", 5, "post")
    assert [r.status_code for r in beats] == [200] * 5
    assert beats[0]["RateLimit-Limit"] == "5"
    assert_rate_limited(device_api.post(f"/v1/devices/{device.id}/heartbeat", {}, format="json"), limit=5,
                        bucket="daemon")  # fmt: skip


def test_requests_without_a_token_and_refused_requests_are_not_counted(limits, anon, device_api):
    assert anon.get("/v1/projects").status_code == 401
    assert "RateLimit-Limit" not in anon.get("/healthz")
    # A device token may not list projects: the 403 costs nothing from its budget.
    assert [r.status_code for r in spend(device_api, "/v1/projects", 6)] == [403] * 6


def test_the_memory_store_drops_expired_counts_as_it_counts_without_a_thread():
    store = MemoryWindows()
    threads = threading.active_count()
    assert [store.incr("kept", 3600) for _ in range(3)] == [1, 2, 3]
    for n in range(10_000):  # a reconnect storm's daemons, each counted once
        store.incr(f"daemon {n}", 0.01)
    assert threading.active_count() == threads  # limits' MemoryStorage starts a timer thread that walks every key
    deadline = time.monotonic() + 5
    while store.incr("probe", 3600) and len(store) > 2:  # each count drops the counts expired by then
        assert time.monotonic() < deadline, len(store)
        time.sleep(0.01)
    assert store.incr("kept", 3600) == 4 and store.incr("daemon 0", 0.01) == 1


def test_off_when_disabled(limits, api):
    limits.ACP_RATELIMIT_ENABLED = False
    responses = spend(api, "/v1/projects", 5)
    assert [r.status_code for r in responses] == [200] * 5
    assert "RateLimit-Limit" not in responses[0]


def test_requests_are_let_in_when_the_store_does_not_answer(limits, api, caplog):
    limits.ACP_RATELIMIT_STORAGE_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    started = time.monotonic()
    responses = spend(api, "/v1/projects", 5)
    assert [r.status_code for r in responses] == [200] * 5
    assert "RateLimit-Limit" not in responses[0]
    assert time.monotonic() - started < 5
    assert sum("Rate-limit store" in record.message for record in caplog.records) == 1  # said once, not per request


def test_a_bad_rate_or_store_is_a_configuration_error(limits, api):
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    limits.ACP_RATELIMIT_USER = "lots"
    limits.ACP_RATELIMIT_STORAGE_URL = "nosuchstore://here"
    with pytest.raises(SystemCheckError) as refused:
        call_command("check")
    assert "ACP_RATELIMIT_USER='lots'" in str(refused.value)
    assert "ACP_RATELIMIT_STORAGE_URL='nosuchstore://here'" in str(refused.value)
    with pytest.raises(ImproperlyConfigured, match="ACP_RATELIMIT_USER"):
        api.get("/v1/projects")


def test_the_schema_documents_the_429_and_its_headers(anon):
    import yaml

    schema = yaml.safe_load(anon.get("/api/schema/").content)
    refused = schema["paths"]["/v1/projects"]["get"]["responses"]["429"]
    assert {"Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= set(refused["headers"])
