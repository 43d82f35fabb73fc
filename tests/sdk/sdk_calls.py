"""Which HTTP call each method of the official SDK makes, found by running it against a recording transport.

Every public method of every resource manager of `ComputerAgentsClient` (and the client's own health calls) is
called once with placeholder arguments; its first request is recorded. Matching the recorded paths against the URL
conf tells which SDK methods ACP serves, so a new SDK method on an ACP path is noticed without editing a list.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import httpx
from computer_agents import ComputerAgentsClient
from django.urls import Resolver404, resolve

PLACEHOLDER_ID = "11111111-1111-4111-8111-111111111111"
CLIENT_METHODS = ("health", "ready", "metrics")


@dataclass(frozen=True)
class SdkCall:
    name: str  # "environments.list", "client.health"
    method: str  # GET, POST, …
    path: str  # /v1/…, with PLACEHOLDER_ID for ids
    accept: str


def _placeholder(parameter: inspect.Parameter):
    annotation = str(parameter.annotation)
    for marker, value in (("dict", {}), ("Dict", {}), ("list", []), ("List", []), ("int", 1), ("bool", True)):
        if marker in annotation:
            return value
    return PLACEHOLDER_ID


def _call_with_placeholders(function) -> None:
    args, kwargs = [], {}
    for parameter in list(inspect.signature(function).parameters.values()):
        if parameter.default is not parameter.empty or parameter.kind in (
            parameter.VAR_POSITIONAL,
            parameter.VAR_KEYWORD,
        ):
            continue
        if parameter.kind == parameter.KEYWORD_ONLY:
            kwargs[parameter.name] = _placeholder(parameter)
        else:
            args.append(_placeholder(parameter))
    try:
        result = function(*args, **kwargs)
        if inspect.isgenerator(result):
            list(result)
    except Exception:  # the recorded request is all we need; parsing an empty answer may fail
        pass


def _public_methods(client: ComputerAgentsClient):
    seen = set()
    for attribute, resource in vars(client).items():
        if attribute == "api" or not hasattr(resource, "_client") or id(resource) in seen:
            continue
        seen.add(id(resource))
        for name, _ in inspect.getmembers(type(resource), inspect.isfunction):
            if not name.startswith("_"):
                yield f"{attribute}.{name}", getattr(resource, name)
    for name in CLIENT_METHODS:
        yield f"client.{name}", getattr(client, name)


@functools.cache
def sdk_calls() -> tuple[SdkCall, ...]:
    """The first request of every SDK method (methods that refuse placeholder arguments make none)."""
    recorded: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        recorded.append(request)
        return httpx.Response(200, json={})

    client = ComputerAgentsClient(api_key="recording", base_url="http://sdk.invalid")
    client.api._client = httpx.Client(base_url=client.api.api_base_url, transport=httpx.MockTransport(record))
    calls = []
    for name, method in _public_methods(client):
        recorded.clear()
        _call_with_placeholders(method)
        if recorded:
            request = recorded[0]
            calls.append(SdkCall(name, request.method, request.url.path, request.headers.get("accept", "")))
    return tuple(calls)


def served_by_acp(call: SdkCall) -> str | None:
    """ "served" when ACP's URL conf routes this method and path to a view that handles the method, "refused" when
    the path exists but not the method (a 405), None when ACP has no such path (not part of ACP)."""
    try:
        match = resolve(call.path)
    except Resolver404:
        return None
    callback = match.func
    actions = getattr(callback, "actions", None)
    if actions is not None:
        handled = set(actions)
    elif hasattr(callback, "cls"):
        handled = {m for m in callback.cls.http_method_names if hasattr(callback.cls, m)}
    else:
        handled = {"get"}  # a plain function view (health checks)
    return "served" if call.method.lower() in handled else "refused"
