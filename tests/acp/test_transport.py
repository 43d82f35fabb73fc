"""What a client gets when it asks for something the API does not serve: the JSON error shape, never a bare page."""

import pytest

pytestmark = pytest.mark.django_db


def test_a_stream_request_to_an_endpoint_that_does_not_stream_is_a_json_406(api):
    response = api.post("/v1/threads", {"content": "x"}, format="json", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 406
    body = response.json()
    assert body["code"] == "not_acceptable" and "application/json" in body["error"] and "stream" in body["error"]


def test_api_paths_over_plain_http_are_refused_not_redirected(api, settings):
    settings.SECURE_SSL_REDIRECT = True
    for path in ("/v1/projects", "/api/v1/workspaces"):
        response = api.get(path)
        assert response.status_code == 403, response
        assert response.json()["code"] == "https_required"
    assert api.get("/v1/projects", HTTP_X_FORWARDED_PROTO="https").status_code == 200
    assert api.get("/admin/").status_code == 301  # pages still redirect to HTTPS


def test_health_and_ready_answer_under_v1_without_a_token(anon):
    health = anon.get("/v1/health")
    assert health.status_code == 200 and health.json()["status"] == "healthy"
    ready = anon.get("/v1/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "checks": {"database": "ok"}}
