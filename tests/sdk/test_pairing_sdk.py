"""Pairing and API keys through the official Computer Agents SDK against a live server."""

import pytest
from computer_agents import ApiClientError, ComputerAgentsClient

from commands.models import LocalSession, Thread
from tests.conftest import make_token, make_user

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sdk_user():
    return make_user("sdk-pairing-user")


@pytest.fixture
def connect(live_server):
    clients = []

    def connect(api_key):
        client = ComputerAgentsClient(api_key=api_key, base_url=live_server.url, timeout=30)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.api.close()


def test_pair_a_machine_and_drive_it_with_its_key(connect, sdk_user):
    bridge = connect(make_token(sdk_user)).local_bridge
    created = bridge.create_runner_pairing_token(name="sdk laptop", ttlSeconds=120)
    assert created["token"] and created["pairingToken"]["status"] == "pending"
    pairing = bridge.get_runner_pairing_token(created["pairingToken"]["id"])
    assert pairing["id"] == created["pairingToken"]["id"] and pairing["tokenPrefix"] == created["token"][:12]

    # The machine has no key yet: the SDK needs some api_key value, and the exchange ignores it.
    machine = connect("no-key-yet").local_bridge
    exchanged = machine.exchange_runner_pairing_token(
        token=created["token"],
        device={"name": "sdk laptop", "platform": "linux", "hostname": "box", "appVersion": "1", "daemonVersion": "2",
                "capabilities": {"launch": True}},
    )  # fmt: skip
    device = exchanged["device"]
    assert exchanged["pairingToken"]["status"] == "completed" and exchanged["pairingToken"]["deviceId"] == device["id"]
    assert exchanged["apiKey"].startswith(exchanged["apiKeyPrefix"])
    assert bridge.get_runner_pairing_token(pairing["id"])["status"] == "completed"

    daemon = connect(exchanged["apiKey"]).local_bridge
    beat = daemon.heartbeat_device(device["id"], daemonVersion="2.1", capabilities={"launch": True})
    assert beat["status"] == "online" and beat["daemonVersion"] == "2.1"

    thread = Thread.objects.create(user=sdk_user)
    session = LocalSession.objects.create(user=sdk_user, thread=thread, device_id=device["id"], status="running")
    command = bridge.enqueue_local_session_command(str(thread.pk), str(session.pk), commandType="pause", payload={})
    polled = daemon.poll_local_session_commands(str(thread.pk), str(session.pk), limit=5)
    assert [c["id"] for c in polled["data"]] == [command["id"]]

    with pytest.raises(ApiClientError) as used:
        machine.exchange_runner_pairing_token(token=created["token"], device={"name": "sdk laptop"})
    assert (used.value.status, used.value.code) == (409, "conflict")


def test_api_keys_list_create_revoke(connect, sdk_user):
    keys = connect(make_token(sdk_user, name="bootstrap")).api_keys
    assert [k["name"] for k in keys.list()] == ["bootstrap"]

    created = keys.create(name="read-only", scopes=["read"], expiresInDays=7)
    key = created["apiKey"]
    assert key["scopes"] == ["read"] and key["expiresAt"] and created["key"].startswith(key["prefix"])
    listed = keys.list()
    assert {k["name"] for k in listed} == {"bootstrap", "read-only"} and all("key" not in k for k in listed)

    reader = connect(created["key"])
    assert reader.projects.list()["data"] == []
    with pytest.raises(ApiClientError) as forbidden:
        reader.projects.create("nope")
    assert (forbidden.value.status, forbidden.value.code) == (403, "forbidden")

    with pytest.raises(ApiClientError) as gone:
        keys.reveal(key["id"])
    assert (gone.value.status, gone.value.code) == (410, "gone")

    assert keys.revoke(key["id"])["apiKey"]["revokedAt"]
    with pytest.raises(ApiClientError) as refused:
        reader.projects.list()
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")
