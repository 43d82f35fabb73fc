"""Pairing tokens: create, read, revoke, and the unauthenticated exchange that registers a device and mints its key."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from acp.models import ApiToken, Device, PairingFailure, PairingToken
from acp.services import token_hash
from tests.conftest import make_client

pytestmark = pytest.mark.django_db

TOKENS = "/v1/local-runner-pairing-tokens"
EXCHANGE = f"{TOKENS}/exchange"
DEVICE = {"name": "laptop", "platform": "linux", "hostname": "box", "appVersion": "1.0", "daemonVersion": "0.1",
          "capabilities": {"launch": True}}  # fmt: skip


def create(api, **body):
    response = api.post(TOKENS, body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def exchange(token, client=None, **body):
    return (client or make_client()).post(EXCHANGE, {"token": token, "device": DEVICE, **body}, format="json")


def test_create_shows_the_token_once_and_stores_only_its_hash(api, user):
    before = timezone.now()
    body = create(api, name="my laptop")
    pairing, raw = body["pairingToken"], body["token"]
    assert set(pairing) == {"id", "userId", "tokenPrefix", "name", "status", "deviceId", "expiresAt", "completedAt",
                            "createdAt", "updatedAt"}  # fmt: skip
    assert pairing["status"] == "pending" and pairing["userId"] == str(user.pk) and pairing["deviceId"] is None
    assert raw.startswith("acpp_") and len(raw) >= 5 + 43 and raw.startswith(pairing["tokenPrefix"])
    row = PairingToken.objects.get(pk=pairing["id"])
    assert row.token_hash == token_hash(raw) and raw not in str(row.__dict__)
    assert timedelta(minutes=9) < row.expires_at - before <= timedelta(minutes=10, seconds=5)

    got = api.get(f"{TOKENS}/{pairing['id']}")
    assert got.status_code == 200 and got.json() == {"pairingToken": pairing}
    listed = api.get(TOKENS).json()
    assert listed["object"] == "list" and [p["id"] for p in listed["data"]] == [pairing["id"]]
    assert "token" not in listed["data"][0]


@pytest.mark.parametrize("ttl", [0, 29, 3601, "ten", None])
def test_ttl_is_bounded(api, ttl):
    response = api.post(TOKENS, {"ttlSeconds": ttl}, format="json")
    assert response.status_code == 400 and "ttlSeconds" in response.json()["details"]


def test_exchange_registers_the_device_and_mints_a_device_key_once(api, user):
    raw = create(api, ttlSeconds=60)["token"]
    response = exchange(raw, client=make_client("acp_not-a-key"))  # a bogus bearer header is not looked at
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"device", "apiKey", "apiKeyPrefix", "pairingToken"}
    device = Device.objects.get(pk=body["device"]["id"])
    assert (device.user, device.name, device.hostname, device.capabilities) == (user, "laptop", "box", {"launch": True})
    assert body["pairingToken"]["status"] == "completed" and body["pairingToken"]["deviceId"] == str(device.pk)
    assert body["pairingToken"]["completedAt"]
    key = ApiToken.objects.get(device=device)
    assert (key.kind, key.key_hash, key.key_prefix) == ("device", token_hash(body["apiKey"]), body["apiKeyPrefix"])

    daemon = make_client(body["apiKey"])
    beat = daemon.post(f"/v1/devices/{device.pk}/heartbeat", {"daemonVersion": "0.2"}, format="json")
    assert beat.status_code == 200 and beat.json()["device"]["status"] == "online"
    assert daemon.get("/v1/projects").status_code == 403  # a device key does only its device's daemon work

    again = exchange(raw)
    assert (again.status_code, again.json()["code"], again.json()["details"]) == (409, "conflict", {})
    assert ApiToken.objects.filter(device=device).count() == 1 and Device.objects.count() == 1


def test_re_pairing_the_same_machine_reuses_its_device_and_revokes_its_old_key(api):
    first = exchange(create(api)["token"]).json()
    second = exchange(create(api)["token"], device={**DEVICE, "daemonVersion": "0.9"}).json()
    assert second["device"]["id"] == first["device"]["id"] and second["device"]["daemonVersion"] == "0.9"
    assert make_client(first["apiKey"]).get("/v1/devices").status_code == 401
    assert make_client(second["apiKey"]).get("/v1/devices").status_code == 200
    other = exchange(create(api)["token"], device={**DEVICE, "hostname": "other-box"}).json()
    assert other["device"]["id"] != first["device"]["id"]


def test_top_level_name_and_capabilities_stand_in_for_the_devices(api):
    body = make_client().post(
        EXCHANGE, {"token": create(api)["token"], "name": "desk", "capabilities": {"x": 1}}, format="json"
    )
    assert body.status_code == 200 and body.json()["device"]["name"] == "desk"
    assert body.json()["device"]["capabilities"] == {"x": 1}


@pytest.mark.parametrize(
    "body",
    [{}, {"token": 5}, {"token": "acpp_x"}, {"token": "acpp_x", "device": {"platform": "linux"}},
     {"token": "acpp_x", "device": "laptop"}, {"token": "acpp_x", "device": {"name": "d", "capabilities": []}}],
)  # fmt: skip
def test_a_malformed_exchange_is_400_and_creates_nothing(body):
    response = make_client().post(EXCHANGE, body, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid_request"
    assert not Device.objects.exists() and not PairingFailure.objects.exists()


def test_expired_revoked_and_unknown_tokens_are_refused(api):
    expired = create(api)
    PairingToken.objects.filter(pk=expired["pairingToken"]["id"]).update(expires_at=timezone.now())
    assert api.get(f"{TOKENS}/{expired['pairingToken']['id']}").json()["pairingToken"]["status"] == "expired"
    response = exchange(expired["token"])
    assert (response.status_code, response.json()["code"]) == (410, "gone") and "expired" in response.json()["error"]

    revoked = create(api)
    assert api.post(f"{TOKENS}/{revoked['pairingToken']['id']}/revoke").json()["pairingToken"]["status"] == "revoked"
    response = exchange(revoked["token"])
    assert (response.status_code, response.json()["code"]) == (410, "gone") and "revoked" in response.json()["error"]

    unknown = exchange("acpp_" + "A" * 43)
    assert (unknown.status_code, unknown.json()["code"]) == (401, "unauthorized")
    assert not Device.objects.exists() and not ApiToken.objects.filter(kind="device").exists()


def test_revoke_moves(api):
    pending = create(api)["pairingToken"]
    path = f"{TOKENS}/{pending['id']}/revoke"
    first = api.post(path)
    assert first.status_code == 200 and first.json()["pairingToken"]["status"] == "revoked"
    repeat = api.post(path)
    assert (
        repeat.status_code == 200
        and repeat.json()["pairingToken"]["updatedAt"] == first.json()["pairingToken"]["updatedAt"]
    )

    completed = create(api)
    exchange(completed["token"])
    refused = api.post(f"{TOKENS}/{completed['pairingToken']['id']}/revoke")
    assert (refused.status_code, refused.json()["code"]) == (409, "state_transition_conflict")
    assert refused.json()["details"]["pairingToken"]["status"] == "completed"


@override_settings(ACP_PAIRING_FAILURE_LIMIT=3, ACP_PAIRING_FAILURE_WINDOW=60)
def test_unknown_tokens_are_rate_limited_per_address(api):
    good = create(api)["token"]
    for _ in range(3):
        assert exchange("acpp_guess").status_code == 401
    limited = exchange(good)
    assert (limited.status_code, limited.json()["code"]) == (429, "rate_limited")
    assert 1 <= int(limited["Retry-After"]) <= 61
    assert make_client().post(EXCHANGE, {"token": good, "device": DEVICE}, format="json",
                              REMOTE_ADDR="10.0.0.9").status_code == 200  # fmt: skip
    # The window passes: the address may try again.
    PairingFailure.objects.update(created_at=timezone.now() - timedelta(seconds=61))
    assert exchange("acpp_guess").status_code == 401


def test_a_device_key_cannot_mint_pairing_tokens(device_api):
    assert device_api.post(TOKENS, {}, format="json").status_code == 403
    assert device_api.get(TOKENS).status_code == 403


def test_the_schema_documents_the_exchange_as_unauthenticated(anon):
    schema = anon.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/v1/local-runner-pairing-tokens/exchange"]["post"]
    assert operation["security"] == []
    assert {"200", "400", "401", "409", "410", "429"} <= set(operation["responses"])
    assert "403" not in operation["responses"]
    created = schema["paths"]["/v1/local-runner-pairing-tokens"]["post"]
    assert created["security"] == [{"bearerAuth": []}, {"apiKeyAuth": []}] and "201" in created["responses"]
    for path in ("/v1/api-keys", "/v1/api-keys/{id}/revoke", "/v1/api-keys/{id}/reveal",
                 "/v1/local-runner-pairing-tokens/{id}", "/v1/local-runner-pairing-tokens/{id}/revoke"):  # fmt: skip
        assert path in schema["paths"], path
