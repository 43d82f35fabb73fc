"""Shared fixtures: users, tokens, authenticated API clients, and small factories."""

import itertools

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from acp.models import Device, Environment, Project
from acp.services import token_create

_counter = itertools.count(1)


def make_user(username=None, **extra):
    username = username or f"user{next(_counter)}"
    return get_user_model().objects.create_user(username=username, email=f"{username}@example.com", **extra)


def make_token(user, *, device=None, **kwargs):
    issued = token_create(user=user, device=device, **kwargs)
    # Mark it used now, so a test's first request does not spend a query recording lastUsedAt.
    type(issued.token).objects.filter(pk=issued.token.pk).update(last_used_at=timezone.now())
    return issued.raw


def make_client(raw_token=None):
    client = APIClient()
    if raw_token:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_token}")
    return client


@pytest.fixture(scope="session", autouse=True)
def stop_realtime_listener(django_db_setup, django_db_blocker):
    """Close the process's LISTEN connection before pytest-django drops the test database."""
    yield
    from acp.realtime import get_listener

    get_listener().stop()


@pytest.fixture
def user(db):
    return make_user("alice")


@pytest.fixture
def other_user(db):
    return make_user("mallory")


@pytest.fixture
def api(user):
    """An API client authenticated with a user token of `user`."""
    return make_client(make_token(user))


@pytest.fixture
def other_api(other_user):
    return make_client(make_token(other_user))


@pytest.fixture
def anon():
    return make_client()


@pytest.fixture
def project(user):
    return Project.objects.create(user=user, name="acp")


@pytest.fixture
def environment(user):
    return Environment.objects.create(user=user, name="remote box")


@pytest.fixture
def device(user):
    return Device.objects.create(user=user, name="laptop", platform="linux", last_seen_at=timezone.now())


@pytest.fixture
def device_api(user, device):
    """An API client authenticated with a device token of `device`."""
    return make_client(make_token(user, device=device))


@pytest.fixture
def other_device(other_user):
    return Device.objects.create(user=other_user, name="their laptop", last_seen_at=timezone.now())
