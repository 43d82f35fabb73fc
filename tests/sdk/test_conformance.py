"""SDK conformance, generated from the SDK: every SDK method whose HTTP call ACP serves has a case here that calls
it against a live server and checks what the SDK's own parsing and docstrings expect (envelopes, field names, list
completeness, status codes).

`sdk_calls()` records which path each SDK method calls; the URL conf, read at run time, says which of those ACP
serves. A served method with neither a case in CASES nor an entry in NOT_YET_COVERED fails
`test_every_served_sdk_method_has_a_case`, so a new endpoint (or a new SDK version) cannot slip through untested.
"""

import pytest
from computer_agents import ApiClientError, ComputerAgentsClient

from acp.models import Environment, Project
from commands.models import Thread
from tests.conftest import make_client, make_token, make_user
from tests.sdk.sdk_calls import sdk_calls, served_by_acp

# Served SDK methods without a case yet: reviewed, each with the reason; the lead shrinks this list.
NOT_YET_COVERED = {
    "local_bridge.create_runner_pairing_token": "issue 14 (pairing tokens) adds the endpoint and its case",
    "local_bridge.get_runner_pairing_token": "issue 14",
    "local_bridge.exchange_runner_pairing_token": "issue 14",
    "api_keys.create": "issue 14 (API keys)",
    "api_keys.list": "issue 14",
    "api_keys.revoke": "issue 14",
    "local_bridge.ingest_thread_events": "the thread timeline adds the endpoint and its case",
    "threads.get_events": "the thread timeline adds the endpoint and its case",
    "threads.stream_events": "the thread timeline (SSE) adds the endpoint and its case",
}

CASES = {}


def case(*names):
    def register(function):
        for name in names:
            CASES[name] = function
        return function

    return register


def refused(call, status, code=None):
    with pytest.raises(ApiClientError) as error:
        call()
    assert error.value.status == status, (error.value.status, error.value.message)
    if code:
        assert error.value.code == code
    assert error.value.message  # the JSON error shape's message, not "HTTP 406"
    return error.value


# --- projects, environments -------------------------------------------------------------------------------------


@case("projects.create", "projects.get_by_id", "projects.update_by_id", "projects.delete_by_id")
def _projects_crud(sdk, world):
    project = sdk.projects.create("sdk project")
    assert project["name"] == "sdk project" and project["userId"] == str(world["user"].pk)
    assert sdk.projects.get_by_id(project["id"])["project"]["id"] == project["id"]
    assert sdk.projects.update_by_id(project["id"], name="renamed")["name"] == "renamed"
    refused(lambda: sdk.projects.create("x", color="red"), 400, "invalid_request")
    sdk.projects.delete_by_id(project["id"])
    refused(lambda: sdk.projects.get_by_id(project["id"]), 404, "not_found")


@case("projects.list", "projects.get", "projects.update")
def _projects_list_is_complete(sdk, world):
    # "the current API accepts only q and view": the SDK sends no limit and counts what it gets as the total.
    assert sdk.projects.get()["id"] == str(world[Project].pk)  # the only project resolves
    assert sdk.projects.update(name="only")["name"] == "only"
    Project.objects.bulk_create(Project(user=world["user"], name=f"p{i}") for i in range(60))
    listed = sdk.projects.list()
    assert listed["total"] == 61 and len(listed["data"]) == 61 and listed["hasMore"] is False
    assert [p["name"] for p in sdk.projects.list(q="only")["data"]] == ["only"]
    refused(lambda: sdk.projects.list(view="board"), 400, "invalid_request")


@case("environments.create", "environments.get", "environments.update", "environments.delete")
def _environments_crud(sdk, world):
    environment = sdk.environments.create("sdk env")
    assert environment["isDefault"] is False  # the world's environment came first
    assert sdk.environments.get(environment["id"])["name"] == "sdk env"
    assert sdk.environments.update(environment["id"], name="renamed")["name"] == "renamed"
    error = refused(lambda: sdk.environments.create("x", internet_access=True), 400, "invalid_request")
    assert "internetAccess" in error.details
    sdk.environments.delete(environment["id"])
    refused(lambda: sdk.environments.get(environment["id"]), 404)


@case("environments.list")
def _environments_list_is_complete(sdk, world):
    Environment.objects.bulk_create(Environment(user=world["user"], name=f"e{i}") for i in range(56))
    environments = sdk.environments.list()
    assert len(environments) == 57  # "the API returns the complete matching list"
    assert [e["id"] for e in sdk.environments.list(is_default=True)] == [str(world[Environment].pk)]
    refused(lambda: sdk.environments.list(project_id=str(world[Project].pk)), 400, "invalid_request")


@case("environments.get_default", "environments.set_default")
def _environments_default(sdk, world):
    assert sdk.environments.get_default()["id"] == str(world[Environment].pk)
    other = sdk.environments.create("second")
    assert sdk.environments.set_default(other["id"])["isDefault"] is True
    assert sdk.environments.get_default()["id"] == other["id"]
    # What run()/quick_setup() do: they find the default instead of creating one per client.
    assert sdk.quick_setup(project_id=str(world[Project].pk))["environment"]["id"] == other["id"]
    assert sdk._ensure_default_environment() == other["id"]
    assert Environment.objects.filter(user=world["user"]).count() == 2


# --- threads ----------------------------------------------------------------------------------------------------


@case("threads.create", "threads.create_with_response", "threads.get", "threads.list")
def _threads_create_get_list(sdk, world):
    environment_id, project_id = str(world[Environment].pk), str(world[Project].pk)
    thread = sdk.threads.create(environment_id, project_id=project_id, title="t", metadata={"a": 1})
    assert (thread["environmentId"], thread["projectId"], thread["status"]) == (environment_id, project_id, "active")
    assert sdk.threads.create_with_response(environment_id)["thread"]["projectId"] is None
    assert sdk.threads.get(thread["id"])["title"] == "t"
    assert [t["id"] for t in sdk.threads.list(project_id=project_id)["data"]] == [thread["id"]]
    assert sdk.threads.list(environment_id=environment_id, status="active")["total"] == 3  # with the world's
    error = refused(lambda: sdk.threads.list(agent_id="agent"), 400, "invalid_request")
    assert "agentId" in error.details
    error = refused(lambda: sdk.threads.create(environment_id, content="do it", agent_id="a"), 400, "invalid_request")
    assert {"content", "agentId", "stream"} <= set(error.details)


@case("threads.create_stream")
def _threads_create_stream_is_refused(sdk, world):
    error = refused(lambda: list(sdk.threads.create_stream(str(world[Environment].pk), content="x")), 406)
    assert error.code == "not_acceptable" and "application/json" in error.message


@case("threads.update", "threads.delete")
def _threads_update_delete(sdk, world):
    thread = sdk.threads.create(title="t")
    assert sdk.threads.update(thread["id"], title="new", status="completed")["status"] == "completed"
    refused(lambda: sdk.threads.update(thread["id"], status="active"), 409, "state_transition_conflict")
    refused(lambda: sdk.threads.update(thread["id"], agent_id="a"), 400, "invalid_request")
    busy = str(world[Thread].pk)  # has a running local session
    refused(lambda: sdk.threads.delete(busy), 409, "conflict")
    assert sdk.threads.delete(thread["id"]) is None
    refused(lambda: sdk.threads.get(thread["id"]), 404)


# --- local bridge -----------------------------------------------------------------------------------------------


@case(
    "local_bridge.create_device",
    "local_bridge.get_device",
    "local_bridge.update_device",
    "local_bridge.heartbeat_device",
    "local_bridge.list_devices",
    "local_bridge.delete_device",
)
def _devices(sdk, world):
    bridge = sdk.local_bridge
    device = bridge.create_device(name="laptop", platform="linux")
    assert device["status"] == "offline"
    assert bridge.heartbeat_device(device["id"], daemonVersion="1")["status"] == "online"
    assert bridge.get_device(device["id"])["daemonVersion"] == "1"
    assert bridge.update_device(device["id"], name="renamed")["name"] == "renamed"
    assert bridge.list_devices(status="online")["total"] == 2  # with the world's
    refused(lambda: bridge.list_devices(platform="linux"), 400, "invalid_request")
    bridge.delete_device(device["id"])
    refused(lambda: bridge.get_device(device["id"]), 404)


@case(
    "local_bridge.create_binding",
    "local_bridge.get_binding",
    "local_bridge.update_binding",
    "local_bridge.list_bindings",
    "local_bridge.delete_binding",
)
def _bindings(sdk, world):
    bridge = sdk.local_bridge
    binding = bridge.create_binding(
        deviceId=str(world["Device"].pk), environmentId=str(world[Environment].pk), localPath="/src"
    )
    assert binding["projectId"] is None and binding["localPath"] == "/src"
    assert bridge.get_binding(binding["id"])["id"] == binding["id"]
    assert bridge.update_binding(binding["id"], syncMode="watch")["syncMode"] == "watch"
    assert bridge.list_bindings(device_id=str(world["Device"].pk))["total"] == 2  # with the world's
    in_project = bridge.list_bindings(project_id=str(world[Project].pk))["data"]
    assert [b["id"] for b in in_project] == [str(world["WorkspaceBinding"].pk)]
    assert bridge.list_bindings()["total"] == 2
    bridge.delete_binding(binding["id"])
    refused(lambda: bridge.get_binding(binding["id"]), 404)


@case(
    "local_bridge.prepare_push_session",
    "local_bridge.get_push_session",
    "local_bridge.list_push_sessions",
    "local_bridge.prepare_pull_session",
    "local_bridge.get_pull_session",
    "local_bridge.list_pull_sessions",
    "local_bridge.attach_pull_session_apply_preview",
    "local_bridge.attach_pull_session_apply_result",
)
def _push_pull(sdk, world):
    bridge, binding = sdk.local_bridge, str(world["WorkspaceBinding"].pk)
    push = bridge.prepare_push_session(binding, planSignature="n1", plan={"f": 1})
    assert push["created"] is True and push["pushSession"]["status"] == "prepared"
    assert bridge.get_push_session(binding, push["pushSession"]["id"])["planSignature"] == "n1"
    assert bridge.list_push_sessions(binding, status="prepared")["total"] == 1
    pull = bridge.prepare_pull_session(binding, planSignature="n2", plan={})["pullSession"]
    assert bridge.get_pull_session(binding, pull["id"])["status"] == "prepared"
    assert bridge.list_pull_sessions(binding)["total"] == 2  # with the world's (superseded) one
    preview = bridge.attach_pull_session_apply_preview(binding, pull["id"], preview={}, previewSignature="v")
    assert preview["updated"] is True
    result = bridge.attach_pull_session_apply_result(binding, pull["id"], result={}, resultSignature="r")
    assert result["pullSession"]["resultSignature"] == "r"


@case(
    "local_bridge.create_local_session",
    "local_bridge.get_local_session",
    "local_bridge.list_local_sessions",
    "local_bridge.heartbeat_local_session",
    "local_bridge.complete_local_session",
    "local_bridge.enqueue_local_session_command",
    "local_bridge.poll_local_session_commands",
    "local_bridge.acknowledge_local_session_command",
)
def _local_sessions_and_commands(sdk, world):
    bridge = sdk.local_bridge
    thread = sdk.threads.create(title="t")["id"]
    session = bridge.create_local_session(thread, deviceId=str(world["Device"].pk))
    assert session["status"] == "created" and session["threadId"] == thread
    assert bridge.heartbeat_local_session(thread, session["id"])["status"] == "running"
    assert bridge.get_local_session(thread, session["id"])["lastHeartbeatAt"]
    assert bridge.list_local_sessions(thread, status="running")["total"] == 1
    command = bridge.enqueue_local_session_command(thread, session["id"], commandType="pause")
    assert command["status"] == "pending"
    polled = bridge.poll_local_session_commands(thread, session["id"], limit=5)
    assert [c["id"] for c in polled["data"]] == [command["id"]] and polled["total"] == 1
    acked = bridge.acknowledge_local_session_command(thread, session["id"], command["id"], status="completed")
    assert acked["status"] == "completed"
    refused(lambda: bridge.poll_local_session_commands(thread, session["id"], since="x"), 400, "invalid_request")
    assert bridge.complete_local_session(thread, session["id"], status="completed")["completedAt"]


# --- the client's own calls ---------------------------------------------------------------------------------------


@case("client.health", "client.ready")
def _health(sdk, world):
    assert sdk.health()["status"] == "healthy"
    assert sdk.ready()["status"] == "ready"


# --- the tests -------------------------------------------------------------------------------------------------------


def served_names():
    return {call.name for call in sdk_calls() if served_by_acp(call) == "served"}


def test_every_served_sdk_method_has_a_case():
    missing = served_names() - set(CASES) - set(NOT_YET_COVERED)
    assert not missing, f"SDK methods on paths ACP serves, without a conformance case: {sorted(missing)}"


def test_cases_and_the_allow_list_name_real_sdk_methods():
    known = {call.name for call in sdk_calls()}
    assert set(CASES) <= known and set(NOT_YET_COVERED) <= known
    assert not set(CASES) & set(NOT_YET_COVERED)


def test_the_recording_found_acp_paths():
    assert {"environments.list", "threads.create", "local_bridge.poll_local_session_commands"} <= served_names()


@pytest.mark.django_db
@pytest.mark.parametrize("call", [c for c in sdk_calls() if served_by_acp(c) == "refused"], ids=lambda c: c.name)
def test_methods_acp_does_not_serve_on_its_paths_get_a_json_405(call):
    api = make_client(make_token(make_user("refused")))
    response = getattr(api, call.method.lower())(call.path, {}, format="json")
    assert response.status_code == 405 and response.json()["code"] == "method_not_allowed"


@pytest.fixture
def sdk_world(live_server):
    from tests.factories import build_world

    user = make_user("sdk-conformance")
    world = build_world(user)
    Environment.objects.filter(pk=world[Environment].pk).update(is_default=True)
    world = {**world, **{model.__name__: obj for model, obj in world.items() if isinstance(model, type)}}
    world["user"] = user
    sdk = ComputerAgentsClient(api_key=make_token(user), base_url=live_server.url, timeout=30)
    yield sdk, world
    sdk.api.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("function", sorted(set(CASES.values()), key=lambda f: f.__name__), ids=lambda f: f.__name__)
def test_sdk_conformance(sdk_world, function):
    function(*sdk_world)
