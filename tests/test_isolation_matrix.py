"""The isolation matrix: every API endpoint that takes an object id, found in the URL conf.

For each one, another user's ids answer exactly like missing ids (404, same body), and no token
answers 401. A new endpoint is covered without anyone editing this file; a new kind of path
parameter fails loudly below until it is named in PARAMETER_MODELS.
"""

import uuid

import pytest

from acp.models import Device
from bindings.models import SyncSession, WorkspaceBinding
from commands.models import ControlCommand, LocalSession, Thread
from sessions.models import Launch, Workspace
from tests.conftest import make_client, make_token, make_user
from tests.factories import build_world
from tests.urlconf import api_patterns, route_methods

pytestmark = pytest.mark.django_db

NOT_FOUND = {"error": "Not found.", "code": "not_found", "details": {}}
PARAMETER_MODELS = {
    "bindingId": WorkspaceBinding,
    "threadId": Thread,
    "localSessionId": LocalSession,
    "commandId": ControlCommand,
    "workspace_id": Workspace,
    "machine_id": Device,
    "launch_id": Launch,
}


def api_routes():
    """(route, {method: action}, view class) for every API URL pattern with at least one path parameter."""
    for route, callback in api_patterns():
        if "<" in route:
            for method in route_methods(callback):
                yield pytest.param(route, method, callback.cls, id=f"{method.upper()} /{route}")


def path_for(route, view_class, world):
    """Fill every `<uuid:name>` of `route` with the id of the world's object of the right model."""
    parts = []
    for segment in route.split("/"):
        if not segment.startswith("<"):
            parts.append(segment)
            continue
        name = segment.strip("<>").split(":")[-1]
        if name == "pk":
            model = view_class.queryset.model
            key = (("push" if "push-sessions" in route else "pull"), model) if model is SyncSession else model
        else:
            assert name in PARAMETER_MODELS, f"Path parameter {name!r} of /{route}: add its model to PARAMETER_MODELS"
            key = PARAMETER_MODELS[name]
        parts.append(str(world[key].pk))
    return "/" + "/".join(parts)


def missing_path(route):
    return "/" + "/".join(str(uuid.uuid4()) if s.startswith("<") else s for s in route.split("/"))


def call(client, method, path):
    if method in ("post", "patch"):
        return getattr(client, method)(path, {}, format="json")
    return getattr(client, method)(path)


@pytest.fixture
def theirs():
    return build_world(make_user("owner-of-everything"))


@pytest.fixture
def me():
    return make_client(make_token(make_user("curious")))


@pytest.mark.parametrize(("route", "method", "view_class"), list(api_routes()))
def test_other_users_ids_are_missing_ids(me, theirs, route, method, view_class):
    foreign = call(me, method, path_for(route, view_class, theirs))
    missing = call(me, method, missing_path(route))
    assert (foreign.status_code, foreign.json()) == (missing.status_code, missing.json())
    if foreign.status_code == 400:
        # The empty body was refused before any lookup: the answer says nothing about the ids. With a
        # valid body the id is looked up, and must then be a 404 (each app's own tests prove that).
        assert set(foreign.json()["details"]), foreign.content
        return
    assert foreign.status_code == 404, foreign.content
    assert foreign.json() == NOT_FOUND


@pytest.mark.parametrize(("route", "method", "view_class"), list(api_routes()))
def test_no_token_is_401(theirs, route, method, view_class):
    response = call(make_client(), method, path_for(route, view_class, theirs))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json()["code"] == "unauthorized"


def test_the_matrix_covers_every_family():
    routes = {param.values[0] for param in api_routes()}
    assert any(r.startswith("v1/workspace-bindings/") for r in routes)
    assert any(r.startswith("v1/threads/") for r in routes)
    assert any(r.startswith("api/v1/workspaces/") for r in routes)
    assert any(r.startswith("api/v1/machines/") for r in routes)
