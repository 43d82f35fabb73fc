"""Every ACP changelist and change page, with 50 rows, in a bounded number of queries (no N+1)."""

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from acp.roles import acp_app_labels
from tests.conftest import make_user
from tests.factories import build_world

pytestmark = pytest.mark.django_db

MAX_CHANGELIST_QUERIES = 15


def acp_model_admins():
    return [
        pytest.param(model, id=f"{model._meta.app_label}.{model._meta.model_name}")
        for model in admin.site._registry
        if model._meta.app_label in acp_app_labels()
    ]


@pytest.fixture
def staff_client():
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def fifty_worlds():
    owners = [make_user(f"owner{i}") for i in range(50)]
    return [build_world(owner) for owner in owners]


@pytest.mark.parametrize("model", acp_model_admins())
def test_changelist_with_50_rows_is_bounded(staff_client, fifty_worlds, model, django_assert_max_num_queries):
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    with django_assert_max_num_queries(MAX_CHANGELIST_QUERIES):
        response = staff_client.get(url)
    assert response.status_code == 200


@pytest.mark.parametrize("model", acp_model_admins())
def test_change_page_opens(staff_client, fifty_worlds, model):
    obj = model.objects.first()
    if obj is None:  # models the world does not build (e.g. API tokens, idempotency keys) have their own tests
        pytest.fail(f"build_world makes no {model.__name__}: add one so its admin page is covered")
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[obj.pk])
    assert staff_client.get(url).status_code == 200
