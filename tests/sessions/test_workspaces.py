import uuid

import pytest

from acp.models import Device, Project
from sessions.models import Workspace

pytestmark = pytest.mark.django_db

WORKSPACE_KEYS = {"id", "name", "project_id", "default_machine_id", "created_at", "updated_at"}


def test_crud_round_trip_returns_bare_snake_case_objects(api, project, device):
    created = api.post(
        "/api/v1/workspaces",
        {"name": "acp", "project_id": str(project.id), "default_machine_id": str(device.id)},
        format="json",
    )
    assert created.status_code == 201, created.content
    workspace = created.json()
    assert set(workspace) == WORKSPACE_KEYS
    assert workspace["project_id"] == str(project.id) and workspace["default_machine_id"] == str(device.id)
    assert workspace["created_at"].endswith("Z")

    assert api.get(f"/api/v1/workspaces/{workspace['id']}").json() == workspace

    patched = api.patch(f"/api/v1/workspaces/{workspace['id']}", {"name": "renamed", "project_id": None}, format="json")
    assert patched.status_code == 200
    assert patched.json()["name"] == "renamed" and patched.json()["project_id"] is None
    assert patched.json()["default_machine_id"] == str(device.id)

    listed = api.get("/api/v1/workspaces").json()
    assert listed["object"] == "list" and listed["total_count"] == 1 and listed["has_more"] is False
    assert listed["data"][0]["id"] == workspace["id"]

    assert api.delete(f"/api/v1/workspaces/{workspace['id']}").status_code == 204
    assert api.get(f"/api/v1/workspaces/{workspace['id']}").status_code == 404


def test_only_name_is_required(api):
    response = api.post("/api/v1/workspaces", {"name": "bare"}, format="json")
    assert response.status_code == 201
    assert response.json()["project_id"] is None and response.json()["default_machine_id"] is None

    missing = api.post("/api/v1/workspaces", {}, format="json")
    assert missing.status_code == 400 and set(missing.json()["details"]) == {"name"}


@pytest.mark.parametrize("name", [5, True, None, {"a": 1}, ["x"], "", "x" * 201])
def test_bad_name_is_400(api, name):
    response = api.post("/api/v1/workspaces", {"name": name}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request" and "name" in response.json()["details"]
    assert not Workspace.objects.exists()


@pytest.mark.parametrize("field", ["project_id", "default_machine_id"])
def test_references_must_be_the_callers_own(api, other_user, field):
    theirs = {
        "project_id": Project.objects.create(user=other_user, name="theirs"),
        "default_machine_id": Device.objects.create(user=other_user, name="theirs"),
    }[field]
    for value in (str(theirs.id), str(uuid.uuid4()), "not-a-uuid", 7, True, {"id": 1}):
        response = api.post("/api/v1/workspaces", {"name": "w", field: value}, format="json")
        assert response.status_code == 400, value
        body = response.json()
        assert body["code"] == "invalid_request" and list(body["details"]) == [field]
    assert not Workspace.objects.exists()


def test_patch_to_someone_elses_machine_is_400_and_changes_nothing(api, workspace, other_device):
    response = api.patch(
        f"/api/v1/workspaces/{workspace.id}", {"default_machine_id": str(other_device.id)}, format="json"
    )
    assert response.status_code == 400 and list(response.json()["details"]) == ["default_machine_id"]
    workspace.refresh_from_db()
    assert workspace.default_machine_id != other_device.id


def test_another_users_workspace_is_the_same_404_as_a_missing_one(api, other_workspace):
    missing = api.get(f"/api/v1/workspaces/{uuid.uuid4()}")
    for method in ("get", "patch", "delete"):
        body = {"name": "x"} if method != "get" else None  # on a GET it would be a query string (unknown: 400)
        response = getattr(api, method)(f"/api/v1/workspaces/{other_workspace.id}", body, format="json")
        assert response.status_code == 404
        assert response.json() == missing.json() == {"error": "Not found.", "code": "not_found", "details": {}}
    assert api.get("/api/v1/workspaces").json()["total_count"] == 0
    other_workspace.refresh_from_db()
    assert other_workspace.name == "theirs"


def test_bad_uuid_in_path_is_json_404(api):
    response = api.get("/api/v1/workspaces/not-a-uuid")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_device_tokens_cannot_manage_workspaces(device_api, workspace):
    assert device_api.get("/api/v1/workspaces").status_code == 403
    assert device_api.post("/api/v1/workspaces", {"name": "x"}, format="json").status_code == 403
    assert device_api.get(f"/api/v1/workspaces/{workspace.id}").status_code == 403


def test_anonymous_is_401(anon):
    response = anon.get("/api/v1/workspaces")
    assert response.status_code == 401 and response.json()["code"] == "unauthorized"
    assert response["WWW-Authenticate"] == "Bearer"


def test_deleting_the_default_machine_leaves_the_workspace_without_one(api, workspace, device):
    device.delete()
    assert api.get(f"/api/v1/workspaces/{workspace.id}").json()["default_machine_id"] is None


def test_list_filters_and_query_count(api, user, project, device, django_assert_max_num_queries):
    for index in range(3):
        Workspace.objects.create(user=user, name=f"w{index}", project=project if index else None)
    with django_assert_max_num_queries(3):  # token, count, page
        page = api.get("/api/v1/workspaces?limit=2").json()
    assert [w["name"] for w in page["data"]] == ["w2", "w1"] and page["has_more"] is True
    filtered = api.get(f"/api/v1/workspaces?project_id={project.id}").json()
    assert filtered["total_count"] == 2
    assert api.get("/api/v1/workspaces?project_id=nope").status_code == 400
