"""User-managed API keys: list, create (secret once), revoke, reveal refused; scopes; X-API-Key; devices' keys."""

import pytest
from rest_framework.test import APIClient

from acp.models import ApiToken
from acp.services import token_hash
from tests.conftest import make_client

pytestmark = pytest.mark.django_db

KEYS = "/v1/api-keys"
FIELDS = {"id", "name", "prefix", "kind", "deviceId", "scopes", "createdAt", "lastUsedAt", "expiresAt", "revokedAt"}


def create(api, **body):
    response = api.post(KEYS, body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_create_shows_the_secret_once_and_the_list_never(api, user, device_api):
    body = create(api, name="ci", expiresInDays=30)
    key, raw = body["apiKey"], body["key"]
    assert set(key) == FIELDS and raw.startswith(key["prefix"]) and raw.startswith("acp_")
    assert (key["kind"], key["scopes"], key["deviceId"], key["revokedAt"]) == ("user", ["read", "write"], None, None)
    assert key["expiresAt"] and ApiToken.objects.get(pk=key["id"]).key_hash == token_hash(raw)
    assert make_client(raw).get("/v1/projects").status_code == 200

    listed = api.get(KEYS).json()
    assert listed["object"] == "list" and listed["total_count"] == 3  # the fixture's user key, the device key, ci
    assert all(set(item) == FIELDS for item in listed["data"])
    assert {item["kind"] for item in listed["data"]} == {"user", "device"}
    assert raw not in str(listed)


@pytest.mark.parametrize(
    "body",
    [{}, {"name": ""}, {"name": "x", "scopes": []}, {"name": "x", "scopes": ["admin"]}, {"name": "x", "scopes": "read"},
     {"name": "x", "expiresInDays": 0}, {"name": "x", "expiresInDays": 100000}],
)  # fmt: skip
def test_bad_create_is_400(api, body):
    response = api.post(KEYS, body, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid_request"


def test_a_read_only_key_reads_and_cannot_write(api):
    raw = create(api, name="dashboard", scopes=["read"])["key"]
    reader = make_client(raw)
    assert reader.get("/v1/projects").status_code == 200
    refused = reader.post("/v1/projects", {"name": "p"}, format="json")
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    assert "write" in refused.json()["error"]
    assert reader.post(KEYS, {"name": "escalate"}, format="json").status_code == 403


def test_x_api_key_header_authenticates_like_bearer(api):
    raw = create(api, name="header")["key"]
    client = APIClient()
    assert client.get("/v1/projects", HTTP_X_API_KEY=raw).status_code == 200
    refused = client.get("/v1/projects", HTTP_X_API_KEY="acp_unknown")
    assert (refused.status_code, refused["WWW-Authenticate"]) == (401, "Bearer")


def test_revoke_is_immediate_and_repeatable(api):
    body = create(api, name="old")
    path = f"{KEYS}/{body['apiKey']['id']}/revoke"
    first = api.post(path)
    assert first.status_code == 200 and first.json()["apiKey"]["revokedAt"]
    assert make_client(body["key"]).get("/v1/projects").status_code == 401
    assert api.post(path).json()["apiKey"]["revokedAt"] == first.json()["apiKey"]["revokedAt"]


def test_reveal_is_gone(api):
    key = create(api, name="k")["apiKey"]
    response = api.get(f"{KEYS}/{key['id']}/reveal")
    assert (response.status_code, response.json()["code"]) == (410, "gone")
    assert "hash" in response.json()["error"]


def test_a_device_key_cannot_manage_keys(device_api):
    assert device_api.get(KEYS).status_code == 403
    assert device_api.post(KEYS, {"name": "x"}, format="json").status_code == 403


def test_deleting_a_device_revokes_its_keys(api, device, device_api):
    assert device_api.get(f"/v1/devices/{device.pk}").status_code == 200
    assert api.delete(f"/v1/devices/{device.pk}").status_code == 204
    assert device_api.get(f"/v1/devices/{device.pk}").status_code == 401
    revoked = [k for k in api.get(KEYS).json()["data"] if k["kind"] == "device"]
    assert len(revoked) == 1 and revoked[0]["revokedAt"] and revoked[0]["deviceId"] is None


def test_the_database_refuses_a_device_key_orphaned_unrevoked(device):
    """Deleting a device without the service (which revokes first) cannot leave a live device key behind."""
    from django.db import IntegrityError, transaction

    from tests.conftest import make_token

    make_token(device.user, device=device)
    with pytest.raises(IntegrityError), transaction.atomic():
        device.delete()


def test_create_token_command_mints_a_read_only_key(user, capsys):
    from django.core.management import call_command

    call_command("create_token", user.username, "--read-only")
    raw = capsys.readouterr().out.strip().splitlines()[-1]
    assert ApiToken.objects.get(key_hash=token_hash(raw)).scopes == ["read"]
    assert make_client(raw).post("/v1/projects", {"name": "p"}, format="json").status_code == 403
