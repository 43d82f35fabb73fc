"""The API's URL patterns, walked from the URL conf, for tests generated over every endpoint."""

from django.urls import URLResolver, get_resolver

API_PREFIXES = ("v1/", "api/v1/")


def api_patterns():
    """(route, callback) for every DRF-served URL pattern under the two API families (plain Django views, such as
    the health checks, are left out: they have no view class to inspect)."""

    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                yield prefix + str(pattern.pattern), pattern.callback

    for route, callback in walk(get_resolver().url_patterns):
        if route.startswith(API_PREFIXES) and hasattr(callback, "cls"):
            yield route, callback


def route_methods(callback) -> dict[str, str]:
    """{http method: view action} a pattern serves (a plain view's methods map to themselves)."""
    return getattr(callback, "actions", None) or {
        m: m for m in callback.cls.http_method_names if m not in ("head", "options", "put")
    }


def view_method(callback, action):
    return getattr(callback.cls, action, None)
