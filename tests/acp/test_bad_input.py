"""Every class of bad input gets a clear 4xx in the one error shape, and changes nothing."""

import json

import pytest

from acp.models import Project
from bindings.models import WorkspaceBinding

pytestmark = pytest.mark.django_db


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "code", "details"}
    assert body["code"] == code
    assert isinstance(body["error"], str) and body["error"]
    return body


def test_malformed_json_is_400(api):
    response = api.generic("POST", "/v1/projects", '{"name": ', content_type="application/json")
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("payload", ["[1, 2]", '"just a string"', "42", "NaN"])
def test_non_object_json_is_400(api, payload):
    response = api.generic("POST", "/v1/projects", payload, content_type="application/json")
    assert_error(response, 400, "invalid_request")


@pytest.fixture
def binding(user, device, environment):
    return WorkspaceBinding.objects.create(user=user, device=device, environment=environment, local_path="/src")


def nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


@pytest.mark.parametrize("depth", [101, 900, 10_000])
def test_json_nested_too_deep_is_400(api, binding, depth):
    # 900 levels parse, but would exceed the recursion limit when encoded again for the database
    body = f'{{"planSignature": "s", "plan": {nested(depth)}}}'
    response = api.generic("POST", f"/v1/workspace-bindings/{binding.pk}/push-sessions", body, "application/json")
    assert_error(response, 400, "invalid_request")


def test_json_nested_up_to_the_limit_is_accepted(api, binding):
    body = f'{{"planSignature": "s", "plan": {nested(99)}}}'  # the body object is the 100th level
    response = api.generic("POST", f"/v1/workspace-bindings/{binding.pk}/push-sessions", body, "application/json")
    assert response.status_code == 201, response.content


def test_wrong_type_is_400_with_field_details(api):
    body = assert_error(api.post("/v1/projects", {"name": {"nested": 1}}, format="json"), 400, "invalid_request")
    assert "name" in body["details"]


@pytest.mark.parametrize(
    "payload",
    [
        {"name": "a\x00b"},
        {"name": "ok", "extra": {"deep": ["x\x00"]}},
        {"name": "ok", "ke\x00y": 1},
    ],
)
def test_nul_bytes_anywhere_are_400(api, payload):
    assert_error(api.post("/v1/projects", json.dumps(payload), content_type="application/json"), 400, "invalid_request")
    assert Project.objects.count() == 0


def test_raw_nul_byte_in_body_is_400(api):
    response = api.generic("POST", "/v1/projects", b'{"name": "a\x00"}', content_type="application/json")
    assert_error(response, 400, "invalid_request")


def test_nul_in_query_string_is_400(api):
    assert_error(api.get("/v1/devices?status=%00"), 400, "invalid_request")


def test_invalid_utf8_is_400(api):
    response = api.generic("POST", "/v1/projects", b'{"name": "\xff\xfe"}', content_type="application/json")
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("path", ["/v1/projects/not-a-uuid", "/v1/projects/123", "/v1/devices/%00/heartbeat"])
def test_bad_uuid_in_path_is_404(api, path):
    assert_error(api.get(path), 404, "not_found")


def test_unknown_api_path_is_json_404(api):
    assert_error(api.get("/v1/nope"), 404, "not_found")
    assert_error(api.get("/api/v1/nope"), 404, "not_found")


def test_body_over_the_limit_is_413(api, settings, project):
    settings.ACP_MAX_BODY_BYTES = 1000
    big = json.dumps({"name": "x" * 2000})
    body = assert_error(
        api.patch(f"/v1/projects/{project.id}", big, content_type="application/json"), 413, "payload_too_large"
    )
    assert body["details"]["limit"] == 1000
    project.refresh_from_db()
    assert project.name == "acp"


def test_wrong_content_type_is_415(api):
    response = api.generic("POST", "/v1/projects", "name=x", content_type="application/x-www-form-urlencoded")
    assert_error(response, 415, "unsupported_media_type")
    response = api.generic("POST", "/v1/projects", "<name/>", content_type="text/xml")
    assert_error(response, 415, "unsupported_media_type")


def test_method_not_allowed_is_405_json(api, project):
    assert_error(api.put(f"/v1/projects/{project.id}", {"name": "x"}, format="json"), 405, "method_not_allowed")


def test_long_name_is_400_not_500(api):
    body = assert_error(api.post("/v1/projects", {"name": "x" * 10_000}, format="json"), 400, "invalid_request")
    assert "name" in body["details"]
