import pytest
import yaml
from openapi_spec_validator import validate

from acp.realtime import get_listener

pytestmark = pytest.mark.django_db


def test_schema_is_valid_openapi_3(anon):
    response = anon.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")
    validate(schema)


def test_schema_documents_envelopes_and_errors(anon):
    schema = yaml.safe_load(anon.get("/api/schema/").content)
    create = schema["paths"]["/v1/projects"]["post"]
    assert set(create["responses"]) >= {"201", "400", "401", "413", "415"}
    ref = create["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    envelope = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert list(envelope["properties"]) == ["project"]
    listing = schema["paths"]["/v1/projects"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    listing = schema["components"]["schemas"][listing["$ref"].rsplit("/", 1)[1]]
    assert set(listing["properties"]) == {"object", "data", "total_count", "has_more"}
    error = schema["components"]["schemas"]["Error"]
    assert set(error["properties"]) == {"error", "code", "details"}
    get_one = schema["paths"]["/v1/projects/{id}"]["get"]["responses"]
    assert "404" in get_one


def test_swagger_ui_is_served_offline(anon):
    response = anon.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    assert "cdn." not in html and "unpkg" not in html
    # The UI's own assets come from this server (drf-spectacular-sidecar).
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    asset = anon.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert asset.status_code == 200


def test_healthz_checks_the_database_without_auth(anon):
    response = anon.get("/healthz")
    assert response.status_code == 200
    # The long-polls' listener is detail: started only once a long-poll waits.
    assert response.json() == {"status": "ok", "database": "ok", "listener": get_listener().state()}
    assert set(response.json()["listener"]) == {"connection", "waiters"}


def test_every_operation_documents_the_503_of_a_database_outage(anon):
    schema = yaml.safe_load(anon.get("/api/schema/").content)
    operations = [(path, method, op) for path, item in schema["paths"].items() for method, op in item.items()]
    assert operations
    assert [(path, method) for path, method, op in operations if "503" not in op["responses"]] == []
