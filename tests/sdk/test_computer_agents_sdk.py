"""The official Computer Agents Python SDK, a real client of the /v1 family, against a live server.

Any mismatch here is a bug on our side: the SDK is what clients in the field run.
"""

import threading

import pytest
from computer_agents import ApiClientError, ComputerAgentsClient

from tests.conftest import make_token, make_user

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client(live_server):
    sdk = ComputerAgentsClient(api_key=make_token(make_user("sdk-user")), base_url=live_server.url, timeout=30)
    yield sdk
    sdk.api.close()


def test_registry_through_the_sdk(client):
    project = client.projects.create("sdk project")
    assert client.projects.get(project["id"])["name"] == "sdk project"
    assert [p["id"] for p in client.projects.list()["data"]] == [project["id"]]

    environment = client.environments.create("sdk env")
    assert client.environments.get(environment["id"])["id"] == environment["id"]
    assert [e["id"] for e in client.environments.list()] == [environment["id"]]

    bridge = client.local_bridge
    device = bridge.create_device(name="sdk laptop", platform="linux", hostname="box")
    assert device["status"] == "offline"
    beat = bridge.heartbeat_device(device["id"], appVersion="1.0", daemonVersion="0.1", capabilities={"pause": True})
    assert beat["status"] == "online" and beat["daemonVersion"] == "0.1"
    assert bridge.get_device(device["id"])["capabilities"] == {"pause": True}
    assert bridge.update_device(device["id"], name="renamed")["name"] == "renamed"
    listed = bridge.list_devices(status="online")
    assert listed["total"] == 1 and listed["data"][0]["id"] == device["id"]
    bridge.delete_device(device["id"])
    assert bridge.list_devices()["total"] == 0


def test_bindings_and_push_pull_sessions_through_the_sdk(client):
    bridge = client.local_bridge
    project = client.projects.create("p")
    environment = client.environments.create("e")
    device = bridge.create_device(name="d")
    binding = bridge.create_binding(
        deviceId=device["id"], environmentId=environment["id"], projectId=project["id"], localPath="/src/app"
    )
    assert bridge.get_binding(binding["id"])["localPath"] == "/src/app"
    assert bridge.update_binding(binding["id"], syncMode="watch")["syncMode"] == "watch"
    assert bridge.list_bindings(device_id=device["id"])["total"] == 1
    assert bridge.list_bindings(project_id=project["id"])["total"] == 1

    first = bridge.prepare_push_session(binding["id"], planSignature="sig-1", plan={"files": ["a"]})
    assert first["created"] is True and first["pushSession"]["status"] == "prepared"
    again = bridge.prepare_push_session(binding["id"], planSignature="sig-1", plan={"files": ["a"]})
    assert again["created"] is False and again["pushSession"]["id"] == first["pushSession"]["id"]
    newer = bridge.prepare_push_session(binding["id"], planSignature="sig-2", plan={"files": ["b"]})
    assert newer["created"] is True
    assert bridge.get_push_session(binding["id"], first["pushSession"]["id"])["status"] == "superseded"
    assert bridge.list_push_sessions(binding["id"], status="prepared")["total"] == 1

    pull = bridge.prepare_pull_session(binding["id"], planSignature="p-1", plan={"files": ["c"]})["pullSession"]
    preview = bridge.attach_pull_session_apply_preview(
        binding["id"], pull["id"], preview={"changes": 1}, previewSignature="pv-1"
    )
    assert preview["updated"] is True and preview["pullSession"]["previewSignature"] == "pv-1"
    repeat = bridge.attach_pull_session_apply_preview(
        binding["id"], pull["id"], preview={"changes": 1}, previewSignature="pv-1"
    )
    assert repeat["updated"] is False
    result = bridge.attach_pull_session_apply_result(
        binding["id"], pull["id"], result={"ok": True}, resultSignature="r-1"
    )
    assert result["updated"] is True and result["pullSession"]["resultSignature"] == "r-1"
    assert bridge.get_pull_session(binding["id"], pull["id"])["result"] == {"ok": True}
    assert bridge.list_pull_sessions(binding["id"])["total"] == 1

    with pytest.raises(ApiClientError) as conflict:
        bridge.prepare_push_session(binding["id"], planSignature="sig-2", plan={"files": ["different"]})
    assert conflict.value.status == 409 and conflict.value.code == "conflict" and conflict.value.message

    bridge.delete_binding(binding["id"])
    assert bridge.list_bindings()["total"] == 0


def test_local_sessions_and_control_commands_through_the_sdk(client):
    bridge = client.local_bridge
    environment = client.environments.create("e")
    device = bridge.create_device(name="d")
    thread = client.threads.create(environment["id"], title="sdk thread", metadata={"via": "sdk"})
    assert thread["title"] == "sdk thread" and thread["status"] == "active"

    session = bridge.create_local_session(thread["id"], deviceId=device["id"], status="running")
    assert session["status"] == "running" and session["threadId"] == thread["id"]
    assert bridge.get_local_session(thread["id"], session["id"])["deviceId"] == device["id"]
    assert bridge.heartbeat_local_session(thread["id"], session["id"], metadata={"cpu": 1})["lastHeartbeatAt"]
    assert bridge.list_local_sessions(thread["id"], device_id=device["id"], status="running")["total"] == 1

    # A waiting daemon is woken by the command.
    woken = {}
    waiter = threading.Thread(
        target=lambda: woken.update(bridge.poll_local_session_commands(thread["id"], session["id"], limit=5, wait=10))
    )
    waiter.start()
    pause = bridge.enqueue_local_session_command(thread["id"], session["id"], commandType="pause", payload={})
    waiter.join(timeout=15)
    assert [c["id"] for c in woken["data"]] == [pause["id"]]

    acked = bridge.acknowledge_local_session_command(thread["id"], session["id"], pause["id"])
    assert acked["status"] == "acknowledged"
    done = bridge.acknowledge_local_session_command(
        thread["id"], session["id"], pause["id"], status="completed", payload={"paused": True}
    )
    assert done["status"] == "completed" and done["completedAt"]
    assert bridge.get_local_session(thread["id"], session["id"])["pausedAt"]

    message = bridge.enqueue_local_session_command(
        thread["id"], session["id"], commandType="message", payload={"text": "hi"}
    )
    assert bridge.poll_local_session_commands(thread["id"], session["id"])["data"][0]["id"] == message["id"]

    with pytest.raises(ApiClientError) as illegal:
        bridge.acknowledge_local_session_command(thread["id"], session["id"], pause["id"], status="cancelled")
    assert illegal.value.status == 409 and illegal.value.code == "state_transition_conflict"
    assert illegal.value.details["command"]["status"] == "completed"

    with pytest.raises(ApiClientError) as invalid:
        bridge.enqueue_local_session_command(thread["id"], session["id"], commandType="explode")
    assert (invalid.value.status, invalid.value.code) == (400, "invalid_request")
    assert "commandType" in invalid.value.details

    ended = bridge.complete_local_session(thread["id"], session["id"], status="completed")
    assert ended["status"] == "completed" and ended["completedAt"]
    assert bridge.poll_local_session_commands(thread["id"], session["id"])["total"] == 0

    with pytest.raises(ApiClientError) as missing:
        bridge.get_local_session(thread["id"], device["id"])
    assert (missing.value.status, missing.value.code, missing.value.message) == (404, "not_found", "Not found.")
