"""Idempotency-Key on every POST that creates, found in the URL conf.

Each create (a router `create`, a launch, or any view method marked `@idempotent`) must be idempotent and have a
case below: a repeat with the same key replays the first answer (status and body identical) and creates nothing;
the same key with another body is 422; concurrent duplicates make one row and no 5xx. A new create endpoint
fails `test_every_create_is_idempotent_and_has_a_case` until it is both.
"""

import threading
import time

import pytest
from django.db import connection

from acp.models import IdempotencyKey
from sessions.models import Launch
from tests.concurrency import run_concurrently
from tests.conftest import make_client, make_token, make_user
from tests.factories import build_world
from tests.urlconf import api_patterns, route_methods, view_method

CREATE_ACTIONS = {"create", "launch"}

# route -> the body of a valid create, given the caller's world (tests/factories.py).
CASES = {
    "v1/projects": lambda w: {"name": "p"},
    "v1/environments": lambda w: {"name": "e"},
    "v1/devices": lambda w: {"name": "d", "platform": "linux"},
    "v1/workspace-bindings": lambda w: {
        "deviceId": str(w["Device"].pk),
        "environmentId": str(w["Environment"].pk),
        "localPath": "/src/acp",
    },
    "v1/workspace-bindings/<uuid:bindingId>/push-sessions": lambda w: {"planSignature": "sig-new", "plan": {"a": 1}},
    "v1/workspace-bindings/<uuid:bindingId>/pull-sessions": lambda w: {"planSignature": "sig-new", "plan": {"b": 2}},
    "v1/threads": lambda w: {"title": "a thread"},
    "v1/threads/<uuid:threadId>/local-sessions": lambda w: {"deviceId": str(w["Device"].pk)},
    "v1/threads/<uuid:threadId>/local-sessions/<uuid:localSessionId>/control": lambda w: {
        "commandType": "message",
        "payload": {"text": "hello"},
    },
    "api/v1/workspaces": lambda w: {"name": "w"},
    "v1/local-runner-pairing-tokens": lambda w: {"name": "laptop"},
    "v1/api-keys": lambda w: {"name": "ci"},
    # The world's machine is offline: the launch is answered at once (machine_offline), and recorded.
    "api/v1/workspaces/<uuid:workspace_id>/sessions": lambda w: {"initial_prompt": "go"},
}


def create_routes():
    for route, callback in api_patterns():
        action = route_methods(callback).get("post")
        method = view_method(callback, action) if action else None
        if action in CREATE_ACTIONS or getattr(method, "idempotent", False):
            yield route, callback, method


def world_of(user):
    world = {getattr(key, "__name__", None) or key[1].__name__ + key[0]: obj for key, obj in build_world(user).items()}
    world["Device"].__class__.objects.filter(pk=world["Device"].pk).update(last_seen_at=None)
    return world


PATH_OBJECTS = {
    "bindingId": "WorkspaceBinding",
    "threadId": "Thread",
    "localSessionId": "LocalSession",
    "workspace_id": "Workspace",
}


def path_of(route, world):
    parts = []
    for segment in route.split("/"):
        if segment.startswith("<"):
            name = segment.strip("<>").split(":")[-1]
            assert name in PATH_OBJECTS, f"path parameter {name!r} of /{route}: name its object in PATH_OBJECTS"
            segment = str(world[PATH_OBJECTS[name]].pk)
        parts.append(segment)
    return "/" + "/".join(parts)


def created_rows(callback):
    return callback.cls.queryset.model.objects.count()


def test_every_create_is_idempotent_and_has_a_case():
    routes = list(create_routes())
    assert {route for route, _, _ in routes} >= {"v1/projects", "v1/threads", "api/v1/workspaces"}
    for route, _callback, method in routes:
        assert getattr(method, "idempotent", False), f"POST /{route} creates: decorate it with @idempotent"
        assert route in CASES, f"POST /{route} is idempotent: add a case (a valid body) to CASES"


@pytest.mark.django_db
@pytest.mark.parametrize(("route", "callback"), [pytest.param(r, c, id=f"POST /{r}") for r, c, _ in create_routes()])
def test_a_repeat_replays_the_first_answer_and_another_body_is_422(route, callback):
    user = make_user("idem")
    world = world_of(user)
    client = make_client(make_token(user))
    path, body = path_of(route, world), CASES[route](world)

    first = client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    assert 200 <= first.status_code < 300, first.content
    rows = created_rows(callback)
    again = client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert again["Idempotent-Replayed"] == "true"
    assert created_rows(callback) == rows

    other = client.post(path, {**body, "other": True}, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert created_rows(callback) == rows

    # Without a key, or with another one, it is a new request as before.
    fresh = client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="key-2")
    assert fresh.status_code < 500 and "Idempotent-Replayed" not in fresh


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("route", "callback"), [pytest.param(r, c, id=f"POST /{r}") for r, c, _ in create_routes()])
def test_concurrent_duplicates_make_one_row_and_no_5xx(route, callback):
    user = make_user("racer")
    world = world_of(user)
    token = make_token(user)
    path, body = path_of(route, world), CASES[route](world)
    rows_before = created_rows(callback)

    def post():
        response = make_client(token).post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="same")
        return response.status_code, response.json()

    answers = run_concurrently([post] * 4)
    assert len(answers) == 4
    assert all(status < 500 for status, _ in answers), answers
    assert len({repr(answer) for answer in answers}) == 1, answers
    assert created_rows(callback) - rows_before == 1
    assert IdempotencyKey.objects.filter(user=user, key="same").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_launch_still_waiting_for_its_daemon_is_in_flight_409_then_replays_its_answer(settings):
    settings.ACP_LAUNCH_ACK_TIMEOUT = 1.5
    user = make_user("launcher")
    world = build_world(user)  # its machine is online: the launch waits for a daemon that never answers
    client = make_client(make_token(user))
    path = f"/api/v1/workspaces/{world[Launch].workspace_id}/sessions"
    first = {}

    def launch():
        try:
            response = make_client(make_token(user)).post(path, {}, format="json", HTTP_IDEMPOTENCY_KEY="L")
            first["answer"] = (response.status_code, response.json())
        finally:
            connection.close()

    waiter = threading.Thread(target=launch)
    waiter.start()
    deadline = time.monotonic() + 5
    while not IdempotencyKey.objects.filter(key="L").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    during = client.post(path, {}, format="json", HTTP_IDEMPOTENCY_KEY="L")
    waiter.join(10)
    assert during.status_code == 409 and during.json()["code"] == "idempotency_key_in_flight"
    assert first["answer"][0] == 504
    after = client.post(path, {}, format="json", HTTP_IDEMPOTENCY_KEY="L")
    assert (after.status_code, after.json()) == first["answer"]
    assert Launch.objects.filter(user=user).count() == 2  # the world's launch and the one request's


@pytest.mark.django_db
def test_an_answer_holding_a_new_key_is_stored_sealed_and_still_replayed():
    user = make_user("keeper")
    client = make_client(make_token(user))
    first = client.post("/v1/api-keys", {"name": "ci"}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    secret = first.json()["key"]
    record = IdempotencyKey.objects.get(user=user, key="k")
    assert record.sealed and secret not in record.response_body and record.response_json is None
    again = client.post("/v1/api-keys", {"name": "ci"}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert again.content == first.content
