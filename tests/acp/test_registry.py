import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from acp.models import Device, Environment, Project

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    ("/v1/projects", "project", Project, {"name": "p"}),
    ("/v1/environments", "environment", Environment, {"name": "e"}),
    ("/v1/devices", "device", Device, {"name": "d"}),
]
ISO_Z = "Z"


@pytest.mark.parametrize(("url", "key", "model", "body"), ENDPOINTS)
def test_crud_round_trip(api, user, url, key, model, body):
    created = api.post(url, body, format="json")
    assert created.status_code == 201
    obj = created.json()[key]
    assert obj["userId"] == str(user.id)
    assert obj["createdAt"].endswith(ISO_Z)
    uuid.UUID(obj["id"])

    got = api.get(f"{url}/{obj['id']}")
    assert got.status_code == 200 and got.json() == {key: obj}

    patched = api.patch(f"{url}/{obj['id']}", {"name": "renamed"}, format="json")
    assert patched.status_code == 200 and patched.json()[key]["name"] == "renamed"

    listed = api.get(url).json()
    assert listed["object"] == "list" and listed["total_count"] == 1 and listed["has_more"] is False
    assert listed["data"][0]["id"] == obj["id"]

    assert api.delete(f"{url}/{obj['id']}").status_code == 204
    assert api.get(f"{url}/{obj['id']}").status_code == 404
    assert not model.objects.filter(pk=obj["id"]).exists()


@pytest.mark.parametrize(("url", "key", "model", "body"), ENDPOINTS)
def test_name_is_required(api, url, key, model, body):
    response = api.post(url, {}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"
    assert "name" in response.json()["details"]


@pytest.mark.parametrize(("url", "key", "model", "body"), ENDPOINTS)
def test_other_users_object_is_the_same_404_as_a_missing_one(api, other_user, url, key, model, body):
    theirs = model.objects.create(user=other_user, name="theirs")
    missing = api.get(f"{url}/{uuid.uuid4()}")
    for method in ("get", "patch", "delete"):
        body = {"name": "x"} if method != "get" else None  # on a GET it would be a query string (unknown: 400)
        response = getattr(api, method)(f"{url}/{theirs.id}", body, format="json")
        assert response.status_code == 404
        assert response.json() == missing.json() == {"error": "Not found.", "code": "not_found", "details": {}}
    assert model.objects.get(pk=theirs.pk).name == "theirs"
    assert api.get(url).json()["total_count"] == 0


def test_other_users_device_heartbeat_is_404(api, other_device):
    response = api.post(f"/v1/devices/{other_device.id}/heartbeat", {}, format="json")
    assert response.status_code == 404
    other_device.refresh_from_db()
    assert other_device.app_version == ""


def test_lists_are_newest_first_and_paginated(api, user):
    now = timezone.now()
    for index in range(5):
        Project.objects.create(user=user, name=f"p{index}", created_at=now + timedelta(seconds=index))
    page = api.get("/v1/projects?limit=2").json()
    assert [p["name"] for p in page["data"]] == ["p4", "p3"]
    assert page["total_count"] == 5 and page["has_more"] is True
    last = api.get("/v1/projects?limit=2&offset=4").json()
    assert [p["name"] for p in last["data"]] == ["p0"] and last["has_more"] is False
    beyond = api.get("/v1/projects?offset=10").json()
    assert beyond["data"] == [] and beyond["total_count"] == 5 and beyond["has_more"] is False
    assert len(api.get("/v1/projects").json()["data"]) == 5


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=abc", "offset=-1", "limit=1.5"])
def test_pagination_limits_are_enforced(api, query):
    response = api.get(f"/v1/projects?{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_request"
    assert set(body["details"]) <= {"limit", "offset"} and body["details"]


def test_limit_bounds_are_inclusive(api):
    assert api.get("/v1/projects?limit=1").status_code == 200
    assert api.get("/v1/projects?limit=100").status_code == 200


def test_list_query_count_does_not_grow_with_page_size(api, user, django_assert_max_num_queries):
    Project.objects.bulk_create([Project(user=user, name=f"p{i}") for i in range(60)])
    with django_assert_max_num_queries(3):
        response = api.get("/v1/projects?limit=100")
    assert len(response.json()["data"]) == 60


def test_device_heartbeat_sets_versions_and_online(api, user):
    device = Device.objects.create(user=user, name="laptop")
    assert api.get(f"/v1/devices/{device.id}").json()["device"]["status"] == "offline"
    response = api.post(
        f"/v1/devices/{device.id}/heartbeat",
        {"appVersion": "1.2.0", "daemonVersion": "0.9.1", "capabilities": {"pause": True}},
        format="json",
    )
    assert response.status_code == 200
    body = response.json()["device"]
    assert body["status"] == "online"
    assert body["appVersion"] == "1.2.0" and body["daemonVersion"] == "0.9.1"
    assert body["capabilities"] == {"pause": True}
    assert body["lastSeenAt"] is not None


def test_device_reads_offline_after_the_configured_silence(api, user, settings):
    settings.ACP_DEVICE_OFFLINE_AFTER = 60
    stale = Device.objects.create(user=user, name="old", last_seen_at=timezone.now() - timedelta(seconds=61))
    fresh = Device.objects.create(user=user, name="new", last_seen_at=timezone.now())
    assert api.get(f"/v1/devices/{stale.id}").json()["device"]["status"] == "offline"
    online = api.get("/v1/devices?status=online").json()["data"]
    offline = api.get("/v1/devices?status=offline").json()["data"]
    assert [d["id"] for d in online] == [str(fresh.id)]
    assert [d["id"] for d in offline] == [str(stale.id)]
    assert api.get("/v1/devices?status=sleepy").status_code == 400


def test_device_fields_on_create(api):
    response = api.post(
        "/v1/devices",
        {"name": "mbp", "platform": "darwin", "hostname": "mbp.local", "appVersion": "1", "capabilities": {}},
        format="json",
    )
    assert response.status_code == 201
    device = response.json()["device"]
    assert set(device) == {
        "id",
        "userId",
        "name",
        "platform",
        "hostname",
        "appVersion",
        "daemonVersion",
        "status",
        "capabilities",
        "lastSeenAt",
        "createdAt",
        "updatedAt",
    }
    assert device["status"] == "offline" and device["lastSeenAt"] is None


def test_capabilities_must_be_an_object(api, device):
    response = api.post(f"/v1/devices/{device.id}/heartbeat", {"capabilities": [1, 2]}, format="json")
    assert response.status_code == 400
    assert "capabilities" in response.json()["details"]
