"""Environments: one default per user (database-enforced), the complete list, and fields ACP cannot act on."""

import functools

import pytest
from django.db import IntegrityError, transaction

from acp import services
from acp.models import Environment
from tests.concurrency import run_concurrently
from tests.conftest import make_client, make_token, make_user

pytestmark = pytest.mark.django_db


def create(api, name, **extra):
    response = api.post("/v1/environments", {"name": name, **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["environment"]


def default_ids(user):
    return list(Environment.objects.filter(user=user, is_default=True).values_list("id", flat=True))


def test_the_first_environment_becomes_the_default(api, user):
    first, second = create(api, "a"), create(api, "b")
    assert (first["isDefault"], second["isDefault"]) == (True, False)
    assert api.get("/v1/environments/default").json() == {
        "environment": api.get(f"/v1/environments/{first['id']}").json()["environment"]
    }


def test_set_default_moves_it_and_a_repeat_changes_nothing(api, user):
    create(api, "a")
    second = create(api, "b")
    moved = api.post(f"/v1/environments/{second['id']}/set-default")
    assert moved.status_code == 200 and moved.json()["environment"]["isDefault"] is True
    assert default_ids(user) == [Environment.objects.get(pk=second["id"]).pk]
    repeat = api.post(f"/v1/environments/{second['id']}/set-default")
    assert repeat.json() == moved.json()
    third = create(api, "c", isDefault=True)
    assert [str(i) for i in default_ids(user)] == [third["id"]]


def test_get_default_creates_one_only_for_a_user_without_any(api, user):
    created = api.get("/v1/environments/default")
    assert created.status_code == 201 and created.json()["environment"]["name"] == "default"
    again = api.get("/v1/environments/default")
    assert again.status_code == 200 and again.json() == created.json()
    assert Environment.objects.filter(user=user).count() == 1


def test_deleting_the_default_moves_it_to_the_oldest_remaining(api, user):
    first, second, third = create(api, "a"), create(api, "b"), create(api, "c")
    assert api.delete(f"/v1/environments/{first['id']}").status_code == 204
    assert [str(i) for i in default_ids(user)] == [second["id"]]
    api.delete(f"/v1/environments/{third['id']}")
    assert [str(i) for i in default_ids(user)] == [second["id"]]
    api.delete(f"/v1/environments/{second['id']}")
    assert default_ids(user) == []


def test_the_default_cannot_be_unset_directly(api):
    first = create(api, "a")
    response = api.patch(f"/v1/environments/{first['id']}", {"isDefault": False}, format="json")
    assert response.status_code == 400 and "isDefault" in response.json()["details"]
    renamed = api.patch(f"/v1/environments/{first['id']}", {"name": "z"}, format="json").json()["environment"]
    assert renamed["name"] == "z" and renamed["isDefault"] is True


def test_the_database_refuses_a_second_default(user):
    Environment.objects.create(user=user, name="a", is_default=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        Environment.objects.create(user=user, name="b", is_default=True)


def test_fields_acp_cannot_act_on_are_refused(api, user):
    response = api.post("/v1/environments", {"name": "x", "internetAccess": True, "runtimes": {}}, format="json")
    assert response.status_code == 400
    assert set(response.json()["details"]) == {"internetAccess", "runtimes"}
    assert not Environment.objects.filter(user=user).exists()


def test_the_list_is_complete_without_limit_and_paged_with_one(api, user, django_assert_max_num_queries):
    Environment.objects.bulk_create(Environment(user=user, name=f"e{i}") for i in range(57))
    with django_assert_max_num_queries(3):  # the token, the count, the rows
        whole = api.get("/v1/environments").json()
    assert (len(whole["data"]), whole["total_count"], whole["has_more"]) == (57, 57, False)
    page = api.get("/v1/environments?limit=10&offset=50").json()
    assert (len(page["data"]), page["has_more"]) == (7, False)
    assert api.get("/v1/environments?limit=10").json()["has_more"] is True


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_creates_and_get_default_leave_one_default():
    user = make_user("racer")
    token = make_token(user)

    def call(i):
        api = make_client(token)
        if i % 2:
            return api.post("/v1/environments", {"name": f"e{i}"}, format="json").status_code
        return api.get("/v1/environments/default").status_code

    statuses = run_concurrently([functools.partial(call, i) for i in range(6)], timeout=30)
    assert all(code in (200, 201) for code in statuses) and len(statuses) == 6
    assert len(default_ids(user)) == 1
    assert services.environment_default(user=user).changed is False
