"""/v1/workspace-bindings: CRUD, filters, ownership of every reference, device tokens."""

import uuid

import pytest

from acp.models import Environment, Project
from bindings.models import SyncSession, WorkspaceBinding
from tests.conftest import make_client, make_token

pytestmark = pytest.mark.django_db

BINDING_KEYS = {
    "id",
    "userId",
    "deviceId",
    "environmentId",
    "projectId",
    "name",
    "localPath",
    "syncRoot",
    "ignorePatterns",
    "syncMode",
    "executionMode",
    "lastPushedSnapshotId",
    "lastPulledSnapshotId",
    "createdAt",
    "updatedAt",
}


def create_body(device, environment, **extra):
    return {"deviceId": str(device.id), "environmentId": str(environment.id), "localPath": "/src/app", **extra}


def test_create_with_required_fields_only_has_every_field_and_defaults(api, user, device, environment):
    response = api.post("/v1/workspace-bindings", create_body(device, environment), format="json")
    assert response.status_code == 201, response.content
    binding = response.json()["binding"]
    assert set(response.json()) == {"binding"}
    assert set(binding) == BINDING_KEYS
    assert binding["userId"] == str(user.id)
    assert binding["deviceId"] == str(device.id) and binding["environmentId"] == str(environment.id)
    assert binding["projectId"] is None
    assert binding["name"] == "" and binding["syncRoot"] == "" and binding["ignorePatterns"] == []
    assert binding["syncMode"] == "manual" and binding["executionMode"] == "bridge_local"
    assert binding["lastPushedSnapshotId"] is None and binding["lastPulledSnapshotId"] is None
    assert binding["createdAt"].endswith("Z")
    stored = WorkspaceBinding.objects.get(pk=binding["id"])
    assert stored.user == user and stored.local_path == "/src/app"


def test_full_round_trip(api, device, environment, project):
    body = create_body(
        device,
        environment,
        projectId=str(project.id),
        name="app",
        syncRoot="/src",
        ignorePatterns=["node_modules/", "*.pyc"],
        syncMode="watch",
        executionMode="legacy_remote",
        lastPushedSnapshotId="snap-1",
        lastPulledSnapshotId="snap-0",
    )
    created = api.post("/v1/workspace-bindings", body, format="json")
    assert created.status_code == 201, created.content
    binding = created.json()["binding"]
    for key, value in body.items():
        assert binding[key] == value

    got = api.get(f"/v1/workspace-bindings/{binding['id']}")
    assert got.status_code == 200 and got.json() == {"binding": binding}

    patched = api.patch(
        f"/v1/workspace-bindings/{binding['id']}",
        {"projectId": None, "syncMode": "off", "lastPushedSnapshotId": "snap-2"},
        format="json",
    )
    assert patched.status_code == 200, patched.content
    after = patched.json()["binding"]
    assert after["projectId"] is None and after["syncMode"] == "off" and after["lastPushedSnapshotId"] == "snap-2"
    assert after["name"] == "app" and after["ignorePatterns"] == ["node_modules/", "*.pyc"]

    listed = api.get("/v1/workspace-bindings").json()
    assert listed["object"] == "list" and listed["total_count"] == 1 and listed["has_more"] is False
    assert listed["data"] == [after]

    assert api.delete(f"/v1/workspace-bindings/{binding['id']}").status_code == 204
    assert api.get(f"/v1/workspace-bindings/{binding['id']}").status_code == 404
    assert not WorkspaceBinding.objects.filter(pk=binding["id"]).exists()


@pytest.mark.parametrize("missing", ["deviceId", "environmentId", "localPath"])
def test_required_fields(api, device, environment, missing):
    body = create_body(device, environment)
    del body[missing]
    response = api.post("/v1/workspace-bindings", body, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"
    assert list(response.json()["details"]) == [missing]
    assert WorkspaceBinding.objects.count() == 0


@pytest.mark.parametrize("field", ["deviceId", "environmentId", "projectId"])
def test_references_to_someone_elses_objects_are_400_naming_the_field(
    api, device, environment, project, other_user, other_device, field
):
    theirs = {
        "deviceId": other_device,
        "environmentId": Environment.objects.create(user=other_user, name="theirs"),
        "projectId": Project.objects.create(user=other_user, name="theirs"),
    }[field]
    body = create_body(device, environment, projectId=str(project.id))
    body[field] = str(theirs.id)
    response = api.post("/v1/workspace-bindings", body, format="json")
    assert response.status_code == 400
    assert list(response.json()["details"]) == [field]
    missing = api.post("/v1/workspace-bindings", {**body, field: str(uuid.uuid4())}, format="json")
    assert missing.status_code == 400 and list(missing.json()["details"]) == [field]
    assert WorkspaceBinding.objects.count() == 0


def test_patch_to_someone_elses_device_is_400_and_changes_nothing(api, binding, other_device):
    response = api.patch(f"/v1/workspace-bindings/{binding.id}", {"deviceId": str(other_device.id)}, format="json")
    assert response.status_code == 400 and list(response.json()["details"]) == ["deviceId"]
    binding.refresh_from_db()
    assert binding.device_id != other_device.id


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("deviceId", "not-a-uuid"),
        ("deviceId", 42),
        ("deviceId", None),
        ("localPath", ""),
        ("localPath", 42),
        ("localPath", ["a"]),
        ("localPath", "x" * 4097),
        ("name", {"a": 1}),
        ("ignorePatterns", "*.pyc"),
        ("ignorePatterns", [1, 2]),
        ("ignorePatterns", [""]),
        ("syncMode", "sometimes"),
        ("executionMode", "remote"),
        ("lastPushedSnapshotId", 7),
    ],
)
def test_bad_values_are_400_naming_the_field(api, device, environment, field, value):
    body = create_body(device, environment)
    body[field] = value
    response = api.post("/v1/workspace-bindings", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["details"]
    assert WorkspaceBinding.objects.count() == 0


def test_someone_elses_binding_is_the_same_404_as_a_missing_one(api, other_binding):
    missing = api.get(f"/v1/workspace-bindings/{uuid.uuid4()}").json()
    for method in ("get", "patch", "delete"):
        body = {"name": "x"} if method != "get" else None  # on a GET it would be a query string (unknown: 400)
        response = getattr(api, method)(f"/v1/workspace-bindings/{other_binding.id}", body, format="json")
        assert response.status_code == 404 and response.json() == missing
    other_binding.refresh_from_db()
    assert other_binding.name == ""
    assert api.get("/v1/workspace-bindings").json()["total_count"] == 0


def test_bad_uuid_in_path_is_404(api):
    assert api.get("/v1/workspace-bindings/not-a-uuid").status_code == 404
    assert api.get("/v1/workspace-bindings/not-a-uuid/push-sessions").status_code == 404


def test_without_a_token_is_401(anon, binding):
    response = anon.get(f"/v1/workspace-bindings/{binding.id}")
    assert response.status_code == 401 and response.json()["code"] == "unauthorized"


def test_filters(api, user, device, second_device, environment, project):
    other_env = Environment.objects.create(user=user, name="second box")

    def make(**fields):
        defaults = {"user": user, "device": device, "environment": environment, "local_path": "/p"}
        return WorkspaceBinding.objects.create(**{**defaults, **fields})

    with_project = make(project=project)
    on_second_device = make(device=second_device)
    on_other_env = make(environment=other_env)

    def ids(query):
        response = api.get(f"/v1/workspace-bindings?{query}")
        assert response.status_code == 200, response.content
        return {item["id"] for item in response.json()["data"]}

    assert ids(f"deviceId={second_device.id}") == {str(on_second_device.id)}
    assert ids(f"environmentId={other_env.id}") == {str(on_other_env.id)}
    assert ids(f"projectId={project.id}") == {str(with_project.id)}
    assert ids("projectId=none") == {str(on_second_device.id), str(on_other_env.id)}
    assert ids(f"deviceId={device.id}&projectId=none") == {str(on_other_env.id)}
    assert ids(f"deviceId={uuid.uuid4()}") == set()


@pytest.mark.parametrize("query", ["deviceId=nope", "environmentId=1", "projectId=null", "projectId=None"])
def test_bad_filter_values_are_400(api, query):
    response = api.get(f"/v1/workspace-bindings?{query}")
    assert response.status_code == 400
    assert query.split("=")[0] in response.json()["details"]


def test_list_query_count_does_not_grow_with_page_size(api, user, device, environment, django_assert_max_num_queries):
    WorkspaceBinding.objects.bulk_create(
        [WorkspaceBinding(user=user, device=device, environment=environment, local_path=f"/p{i}") for i in range(60)]
    )
    with django_assert_max_num_queries(3):
        response = api.get("/v1/workspace-bindings?limit=100")
    assert len(response.json()["data"]) == 60


def test_deleting_a_binding_deletes_its_sessions(api, binding):
    api.post(f"/v1/workspace-bindings/{binding.id}/push-sessions", {"planSignature": "s", "plan": {}}, format="json")
    assert SyncSession.objects.count() == 1
    assert api.delete(f"/v1/workspace-bindings/{binding.id}").status_code == 204
    assert SyncSession.objects.count() == 0


# --- device tokens -------------------------------------------------------------------------------


def test_device_token_reads_only_its_own_devices_bindings(user, device, second_device, environment, device_api):
    mine = WorkspaceBinding.objects.create(user=user, device=device, environment=environment, local_path="/a")
    other = WorkspaceBinding.objects.create(user=user, device=second_device, environment=environment, local_path="/b")
    listed = device_api.get("/v1/workspace-bindings")
    assert listed.status_code == 200
    assert [item["id"] for item in listed.json()["data"]] == [str(mine.id)]
    assert device_api.get(f"/v1/workspace-bindings/{mine.id}").status_code == 200
    assert device_api.get(f"/v1/workspace-bindings/{other.id}").status_code == 404


def test_device_token_may_record_sync_progress_but_nothing_else(user, device, environment, device_api, second_device):
    mine = WorkspaceBinding.objects.create(user=user, device=device, environment=environment, local_path="/a")
    url = f"/v1/workspace-bindings/{mine.id}"
    ok = device_api.patch(url, {"lastPushedSnapshotId": "s1", "lastPulledSnapshotId": "s0"}, format="json")
    assert ok.status_code == 200, ok.content
    assert ok.json()["binding"]["lastPushedSnapshotId"] == "s1"

    moved = device_api.patch(url, {"deviceId": str(second_device.id), "lastPushedSnapshotId": "s2"}, format="json")
    assert moved.status_code == 403 and moved.json()["code"] == "forbidden"
    assert "deviceId" in moved.json()["error"]
    mine.refresh_from_db()
    assert mine.device_id == device.id and mine.last_pushed_snapshot_id == "s1"


def test_device_token_cannot_create_or_delete_bindings(user, device, environment, device_api):
    created = device_api.post("/v1/workspace-bindings", create_body(device, environment), format="json")
    assert created.status_code == 403
    mine = WorkspaceBinding.objects.create(user=user, device=device, environment=environment, local_path="/a")
    assert device_api.delete(f"/v1/workspace-bindings/{mine.id}").status_code == 403
    assert WorkspaceBinding.objects.filter(pk=mine.pk).exists()
    assert WorkspaceBinding.objects.count() == 1


def test_device_token_of_another_device_cannot_see_the_binding(user, binding, second_device):
    client = make_client(make_token(user, device=second_device))
    assert client.get(f"/v1/workspace-bindings/{binding.id}").status_code == 404
    assert (
        client.patch(f"/v1/workspace-bindings/{binding.id}", {"lastPushedSnapshotId": "x"}, format="json").status_code
        == 404
    )


@pytest.mark.parametrize("registry", ["devices", "environments", "projects"])
def test_deleting_a_referenced_object_keeps_the_data_consistent(api, binding, registry):
    api.post(f"/v1/workspace-bindings/{binding.id}/pull-sessions", {"planSignature": "s", "plan": {}}, format="json")
    target = {"devices": binding.device_id, "environments": binding.environment_id, "projects": binding.project_id}
    assert api.delete(f"/v1/{registry}/{target[registry]}").status_code == 204
    if registry == "projects":
        binding.refresh_from_db()
        assert binding.project_id is None and SyncSession.objects.get().project_id is None
        assert api.get(f"/v1/workspace-bindings/{binding.id}").json()["binding"]["projectId"] is None
    else:
        assert not WorkspaceBinding.objects.exists() and not SyncSession.objects.exists()
