"""Every GET endpoint of both API families, found in the URL conf, refuses a query parameter it does not know."""

import pytest
from django.urls import URLResolver, get_resolver

from tests.conftest import make_client, make_token
from tests.factories import build_world
from tests.test_isolation_matrix import API_PREFIXES, path_for

pytestmark = pytest.mark.django_db


def get_routes():
    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                yield prefix + str(pattern.pattern), pattern.callback

    for route, callback in walk(get_resolver().url_patterns):
        if not route.startswith(API_PREFIXES) or not hasattr(callback, "cls"):
            continue
        actions = getattr(callback, "actions", None) or {}
        if "get" in actions or (not actions and "get" in callback.cls.http_method_names):
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
