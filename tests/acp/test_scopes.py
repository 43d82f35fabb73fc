"""Read-only keys: every write endpoint in the URL conf answers 403, generated from the URL conf like the
isolation matrix, so a new endpoint is covered without editing this file."""

import pytest

from acp.models import ApiToken
from sessions.models import Workspace
from tests.conftest import make_client, make_token, make_user
from tests.factories import build_world
from tests.test_isolation_matrix import path_for
from tests.urlconf import api_patterns, route_methods

pytestmark = pytest.mark.django_db

READ_METHODS = {"get", "head", "options"}
# The one public operation: it authenticates by the pairing token in its body, not by a key.
PUBLIC = {("post", "v1/local-runner-pairing-tokens/exchange")}


def api_write_routes():
    for route, callback in api_patterns():
        for method in route_methods(callback):
            if method not in READ_METHODS and (method, route) not in PUBLIC:
                yield pytest.param(route, method, callback.cls, id=f"{method.upper()} /{route}")


@pytest.fixture
def world():
    return build_world(make_user("reader"))


@pytest.fixture
def reader(world):
    return make_client(make_token(world[ApiToken].user, scopes=["read"]))


@pytest.mark.parametrize(("route", "method", "view_class"), list(api_write_routes()))
def test_a_read_only_key_gets_403_on_every_write(reader, world, route, method, view_class):
    path = path_for(route, view_class, world) if "<" in route else "/" + route
    response = getattr(reader, method)(path, {}, format="json") if method != "delete" else reader.delete(path)
    assert response.status_code == 403, (path, response.content)
    assert response.json()["code"] == "forbidden"


def test_the_write_matrix_covers_every_family_and_the_public_exchange_is_the_only_exception():
    routes = {(param.values[1], param.values[0]) for param in api_write_routes()}
    assert ("post", "v1/projects") in routes and ("post", "v1/api-keys") in routes
    assert any(r.startswith("api/v1/workspaces/") for _, r in routes)
    assert any(r.startswith("v1/threads/") for _, r in routes)
    assert not PUBLIC & routes


def test_a_read_only_key_still_reads(reader, world):
    assert reader.get("/v1/devices").status_code == 200
    assert reader.get(f"/api/v1/workspaces/{world[Workspace].pk}").status_code == 200
