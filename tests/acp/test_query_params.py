"""Every GET endpoint of both API families, found in the URL conf, refuses a query parameter it does not know."""

import pytest

from tests.conftest import make_client, make_token
from tests.factories import build_world
from tests.test_isolation_matrix import path_for
from tests.urlconf import api_patterns, route_methods

pytestmark = pytest.mark.django_db


def get_routes():
    for route, callback in api_patterns():
        if "get" in route_methods(callback):
            yield pytest.param(route, callback.cls, id=f"GET /{route}")


@pytest.mark.parametrize(("route", "view_class"), list(get_routes()))
def test_an_unknown_query_parameter_is_a_400_naming_it(user, route, view_class):
    api = make_client(make_token(user))
    response = api.get(path_for(route, view_class, build_world(user)) + "?projectIdd=1")
    assert response.status_code == 400, (route, response.content)
    body = response.json()
    assert body["code"] == "invalid_request" and set(body["details"]) == {"projectIdd"}
    assert "this endpoint accepts" in body["error"]


def test_every_list_is_covered():
    routes = {param.values[0] for param in get_routes()}
    assert {"v1/environments", "v1/threads", "api/v1/workspaces"} <= routes
    assert any(r.endswith("control/poll") for r in routes) and any(r.endswith("/launches") for r in routes)
