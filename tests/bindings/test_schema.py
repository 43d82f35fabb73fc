import pytest
import yaml

pytestmark = pytest.mark.django_db

BASE = "/v1/workspace-bindings/{bindingId}"


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    from rest_framework.test import APIClient

    with django_db_blocker.unblock():
        return yaml.safe_load(APIClient().get("/api/schema/").content)


def component(schema, response):
    ref = response["content"]["application/json"]["schema"]["$ref"]
    return schema["components"]["schemas"][ref.rsplit("/", 1)[1]]


@pytest.mark.parametrize(("direction", "key"), [("push", "pushSession"), ("pull", "pullSession")])
def test_prepare_documents_200_201_and_409_with_the_seed_envelope(schema, direction, key):
    operation = schema["paths"][f"{BASE}/{direction}-sessions"]["post"]
    assert {"200", "201", "400", "401", "404", "409", "413", "415"} <= set(operation["responses"])
    for code in ("200", "201"):
        assert set(component(schema, operation["responses"][code])["properties"]) == {key, "created"}
    request = component(schema, {"content": operation["requestBody"]["content"]})
    assert set(request["properties"]) == {"planSignature", "plan", "metadata"}
    assert set(request["required"]) == {"planSignature", "plan"}
    assert request["properties"]["planSignature"]["maxLength"] == 512
    assert request["properties"]["planSignature"]["minLength"] == 1


@pytest.mark.parametrize(("direction", "key"), [("push", "pushSession"), ("pull", "pullSession")])
def test_list_retrieve_and_cancel_are_documented(schema, direction, key):
    listing = schema["paths"][f"{BASE}/{direction}-sessions"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"bindingId", "status", "limit", "offset"}
    detail = schema["paths"][f"{BASE}/{direction}-sessions/{{id}}"]["get"]
    assert set(component(schema, detail["responses"]["200"])["properties"]) == {key}
    cancel = schema["paths"][f"{BASE}/{direction}-sessions/{{id}}/cancel"]["post"]
    assert set(component(schema, cancel["responses"]["200"])["properties"]) == {key}
    assert "409" in cancel["responses"]


@pytest.mark.parametrize("action", ["apply-preview", "apply-result"])
def test_pull_apply_is_documented(schema, action):
    operation = schema["paths"][f"{BASE}/pull-sessions/{{id}}/{action}"]["post"]
    assert set(component(schema, operation["responses"]["200"])["properties"]) == {"pullSession", "updated"}
    assert "409" in operation["responses"]


def test_binding_filters_are_documented(schema):
    listing = schema["paths"]["/v1/workspace-bindings"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"deviceId", "environmentId", "projectId"}
