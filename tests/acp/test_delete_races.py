"""A write that refers to a row, racing a delete of that row: answered (2xx or a clear 4xx), never a 5xx.

The pairs come from the models: every foreign key of the ACP apps whose target can be deleted through the API
(found in the URL conf: a viewset with a `destroy` action) is either written by an endpoint listed in WRITERS or
named in NOT_RACED_HERE with the reason. A new foreign key fails `test_every_foreign_key_is_classified`
until it is one or the other.

Each pair runs a few times in two real threads on real PostgreSQL connections, released together; afterwards
nothing refers to a missing row and the writer's answer agrees with what is stored.
"""

import traceback
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.db import IntegrityError, models, transaction
from django.urls import URLResolver, get_resolver, reverse
from django.utils import timezone

from acp.api.errors import exception_handler
from acp.models import Device, Environment, Project
from bindings.api.views import WorkspaceBindingViewSet
from bindings.models import SyncSession, WorkspaceBinding
from commands.models import ControlCommand, LocalSession, Thread
from sessions.choices import LaunchStatus
from sessions.models import Launch, Workspace
from tests.concurrency import run_concurrently
from tests.conftest import make_client, make_token, make_user

pytestmark = pytest.mark.django_db(transaction=True)

TRIES = 3
ACP_APPS = ("acp", "bindings", "acp_sessions", "commands")


def deletable_models() -> dict[type[models.Model], tuple[str, str]]:
    """{model: (URL name of its detail route, its id's parameter)} for every API viewset that deletes."""

    def walk(patterns):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns)
            else:
                yield pattern

    found = {}
    for pattern in walk(get_resolver().url_patterns):
        actions = getattr(pattern.callback, "actions", None) or {}
        if "destroy" in actions.values():
            found[pattern.callback.cls.queryset.model] = (pattern.name, next(iter(pattern.pattern.converters)))
    return found


DELETABLE = deletable_models()


def referencing_foreign_keys():
    for model in apps.get_models():
        if model._meta.app_label not in ACP_APPS:
            continue
        for fk in model._meta.concrete_fields:
            if fk.is_relation and fk.related_model in DELETABLE:
                yield model, fk.name


@dataclass
class World:
    """One user's stable objects; a try's target is created fresh next to them."""

    user: Any
    token: str
    device: Device
    environment: Environment
    project: Project
    binding: WorkspaceBinding
    workspace: Workspace
    thread: Thread
    extra: dict = field(default_factory=dict)


@dataclass
class Write:
    method: str
    path: str
    body: dict
    row_id: Any = None  # the row a PATCH changes (a create's is in its response)
    token: str | None = None  # another token than the world's (a device's)
    written_key: str | None = None  # the response's key naming the row written, when it is not the object itself


def binding_for(world, **refs):
    fields = {"device": world.device, "environment": world.environment, "project": world.project, **refs}
    return WorkspaceBinding.objects.create(user=world.user, local_path="/src", **fields)


def push_sessions(binding):
    return f"/v1/workspace-bindings/{binding.pk}/push-sessions"


def binding_create(key):
    def write(world, target):
        body = {"deviceId": world.device.pk, "environmentId": world.environment.pk, "localPath": "/src"}
        return Write("post", "/v1/workspace-bindings", {**body, key: target.pk})

    return write


def binding_patch(key):
    def write(world, target):
        return Write("patch", f"/v1/workspace-bindings/{world.binding.pk}", {key: target.pk}, world.binding.pk)

    return write


def sync_session_on_binding_of(ref):
    """A prepare copies the binding's device, environment and project onto the session."""

    def write(world, target):
        binding = binding_for(world, **{ref: target})
        return Write("post", push_sessions(binding), {"planSignature": "s", "plan": {}})

    return write


def prepare_on(world, target):
    return Write("post", push_sessions(target), {"planSignature": "s", "plan": {}})


def workspace_create(key):
    def write(world, target):
        return Write("post", "/api/v1/workspaces", {"name": "w", key: str(target.pk)})

    return write


def workspace_patch(key):
    def write(world, target):
        return Write("patch", f"/api/v1/workspaces/{world.workspace.pk}", {key: str(target.pk)}, world.workspace.pk)

    return write


def launch_in(world, target):
    return Write("post", f"/api/v1/workspaces/{target.pk}/sessions", {"machine_id": str(world.device.pk)})


def launch_on(world, target):
    path = f"/api/v1/workspaces/{world.workspace.pk}/sessions"
    return Write("post", path, {"machine_id": str(target.pk)})


def thread_create(world, target):
    return Write("post", "/v1/threads", {"environmentId": str(target.pk)})


def local_session_create(key_or_thread_env):
    def write(world, target):
        thread, body = world.thread, {"deviceId": str(world.device.pk)}
        if key_or_thread_env == "deviceId":
            body = {"deviceId": str(target.pk)}
        elif key_or_thread_env == "workspaceBindingId":
            body["workspaceBindingId"] = str(target.pk)
        elif key_or_thread_env == "thread":
            thread = target
        else:  # the session's environment is copied from its thread's
            thread = Thread.objects.create(user=world.user, environment=target)
        return Write("post", f"/v1/threads/{thread.pk}/local-sessions", body)

    return write


def launch_ack(world, target):
    """The daemon's "ok" creates the local session on the launch's machine."""
    return _ack(world, machine=target, written_key="local_session_id")


def launch_ack_in_thread(world, target):
    """The daemon's "ok" to a launch in the caller's thread (`user_session`) makes it the launch's thread."""
    return _ack(world, machine=world.device, user_session=target)


def _ack(world, *, machine, written_key=None, **fields):
    launch = Launch.objects.create(
        user=world.user,
        workspace=world.workspace,
        machine=machine,
        status=LaunchStatus.PENDING,
        expires_at=timezone.now() + timedelta(minutes=1),
        **fields,
    )
    path = f"/api/v1/machines/{machine.pk}/launches/{launch.pk}/ack"
    token = make_token(world.user, device=machine)
    return Write("post", path, {"status": "ok", "payload": {}}, token=token, written_key=written_key)


def thread_create_in_project(world, target):
    return Write("post", "/v1/threads", {"projectId": str(target.pk)})


def thread_patch(world, target):
    return Write("patch", f"/v1/threads/{world.thread.pk}", {"projectId": str(target.pk)}, world.thread.pk)


def launch_resuming(world, target):
    path = f"/api/v1/workspaces/{world.workspace.pk}/sessions"
    return Write("post", path, {"machine_id": str(world.device.pk), "user_session_id": str(target.pk)})


def command_in(world, target):
    """A thread with a live session cannot be deleted (409), so this pair never races: it shows that it does not."""
    session = LocalSession.objects.create(user=world.user, thread=target, device=world.device)
    path = f"/v1/threads/{target.pk}/local-sessions/{session.pk}/control"
    return Write("post", path, {"commandType": "message", "payload": {"text": "hi"}})


WRITERS = {
    (WorkspaceBinding, "device"): [binding_create("deviceId"), binding_patch("deviceId")],
    (WorkspaceBinding, "environment"): [binding_create("environmentId"), binding_patch("environmentId")],
    (WorkspaceBinding, "project"): [binding_create("projectId"), binding_patch("projectId")],
    (SyncSession, "workspace_binding"): [prepare_on],
    (SyncSession, "device"): [sync_session_on_binding_of("device")],
    (SyncSession, "environment"): [sync_session_on_binding_of("environment")],
    (SyncSession, "project"): [sync_session_on_binding_of("project")],
    (Workspace, "project"): [workspace_create("project_id"), workspace_patch("project_id")],
    (Workspace, "default_machine"): [workspace_create("default_machine_id"), workspace_patch("default_machine_id")],
    (Launch, "workspace"): [launch_in],
    (Launch, "machine"): [launch_on],
    (Thread, "environment"): [thread_create],
    (Thread, "project"): [thread_create_in_project, thread_patch],
    (Launch, "user_session"): [launch_resuming],
    (Launch, "thread"): [launch_ack_in_thread],
    (LocalSession, "thread"): [local_session_create("thread")],
    (ControlCommand, "thread"): [command_in],
    (LocalSession, "device"): [local_session_create("deviceId"), launch_ack],
    (LocalSession, "workspace_binding"): [local_session_create("workspaceBindingId")],
    (LocalSession, "environment"): [local_session_create("thread environment")],
}
NOT_RACED_HERE = {
    # The pairing exchange writes both under its own lock of the device (select_for_update, or the device it
    # creates in the same transaction), and device_delete locks the device first: the two serialise.
    ("acp", "ApiToken", "device"): "minted by `manage.py create_token`, or by the exchange under the device's lock",
    ("acp", "PairingToken", "device"): "set by the exchange under the device's lock (see above)",
    # Every append first bumps the thread's sequence counter (an UPDATE of the thread row): a delete of the thread
    # (FOR UPDATE, then the cascade) waits for it, or makes it find no row, which is a 404 (_allocate_sequences).
    ("commands", "ThreadEvent", "thread"): "appended under the thread row's lock (the sequence counter's UPDATE)",
    ("commands", "ThreadEvent", "session"): "a session goes only with its thread (cascade) or by retention",
}


def test_every_foreign_key_is_classified():
    unclassified = [
        (model.__name__, name)
        for model, name in referencing_foreign_keys()
        if (model, name) not in WRITERS and (model._meta.app_label, model.__name__, name) not in NOT_RACED_HERE
    ]
    assert not unclassified, f"say which endpoint writes these, or why none does: {unclassified}"
    assert {Project, Environment, Device, WorkspaceBinding, Workspace} <= set(DELETABLE)


def make_target(model, world):
    if model is Device:  # offline, so a launch on it is answered at once (machine_offline)
        return Device.objects.create(user=world.user, name="target")
    if model is WorkspaceBinding:
        return binding_for(world)
    if model is Thread:
        return Thread.objects.create(user=world.user, title="target")
    if model is Workspace:
        return Workspace.objects.create(user=world.user, name="target", default_machine=world.device)
    return model.objects.create(user=world.user, name="target")


def make_world():
    user = make_user()
    device = Device.objects.create(user=user, name="laptop")
    environment = Environment.objects.create(user=user, name="box")
    project = Project.objects.create(user=user, name="p")
    world = World(
        user=user,
        token=make_token(user),
        device=device,
        environment=environment,
        project=project,
        binding=None,
        workspace=Workspace.objects.create(user=user, name="w", project=project, default_machine=device),
        thread=Thread.objects.create(user=user, environment=environment),
    )
    world.binding = binding_for(world)
    return world


def request(token, method, path, body=None):
    client = make_client(token)
    client.raise_request_exception = False
    response = getattr(client, method)(path, body, format="json") if body is not None else getattr(client, method)(path)
    return response.status_code, response.json() if response.content else None


def run_together(*calls):
    """The calls' answers, released together; an exception escaping the client is a crash, reported as a 599."""
    results = run_concurrently(list(calls), timeout=30)
    return [
        (599, "".join(traceback.format_exception(result))) if isinstance(result, Exception) else result
        for result in results
    ]


def written_id(body):
    """The id of the row a create answered with, in any of the two API families' envelopes."""
    if "payload" in body:  # a launch's answer
        return body["payload"]["launch_id"]
    if "id" in body:
        return body["id"]
    return next(value["id"] for value in body.values() if isinstance(value, dict) and "id" in value)


def assert_no_dangling_references():
    for model, name in referencing_foreign_keys():
        fk = model._meta.get_field(name)
        dangling = model.objects.exclude(**{f"{name}__isnull": True}).exclude(
            **{f"{name}__in": fk.related_model.objects.values("pk")}
        )
        assert not dangling.exists(), f"{model.__name__}.{name} refers to a missing row"


def assert_answer_matches_store(model, write, fk, target, write_status, write_body, deleted):
    if write_status >= 400:
        if write.row_id is not None:  # a refused PATCH changed nothing
            row = model.objects.filter(pk=write.row_id).first()
            assert row is None or getattr(row, fk.attname) != target.pk
        return
    row_id = write_body[write.written_key] if write.written_key else write.row_id or written_id(write_body)
    row = model.objects.filter(pk=row_id).first()
    if not deleted:
        assert row is not None and getattr(row, fk.attname) == target.pk
    elif row is not None:  # the write came first and the delete then unset it (or the write saw it gone and did
        # without it: an acknowledgement whose thread was deleted makes a new one)
        assert fk.remote_field.on_delete is models.SET_NULL and getattr(row, fk.attname) != target.pk


PAIRS = [
    pytest.param(model, name, writer, id=f"{model.__name__}.{name}-{writer.__qualname__.split('.')[0]}-{i}")
    for (model, name), writers in WRITERS.items()
    for i, writer in enumerate(writers)
]


@pytest.mark.parametrize(("model", "fk_name", "writer"), PAIRS)
def test_a_write_racing_a_delete_of_what_it_refers_to_is_answered(model, fk_name, writer):
    fk = model._meta.get_field(fk_name)
    world = make_world()
    for _ in range(TRIES):
        target = make_target(fk.related_model, world)
        write = writer(world, target)
        route, parameter = DELETABLE[fk.related_model]
        delete_path = reverse(route, kwargs={parameter: target.pk})
        (write_status, write_body), (delete_status, delete_body) = run_together(
            lambda write=write: request(write.token or world.token, write.method, write.path, write.body),
            lambda path=delete_path: request(world.token, "delete", path),
        )
        assert write_status < 500 and delete_status < 500, (write_status, write_body, delete_status, delete_body)
        # 401: a device token goes with its device
        assert write_status in (200, 201, 400, 401, 404, 409), (write_status, write_body)
        assert delete_status in (204, 409), (delete_status, delete_body)
        if write_status >= 400:
            assert write_body["code"] in ("invalid_request", "unauthorized", "not_found", "conflict"), write_body
        deleted = not fk.related_model.objects.filter(pk=target.pk).exists()
        assert deleted == (delete_status == 204)
        assert_no_dangling_references()
        assert_answer_matches_store(model, write, fk, target, write_status, write_body, deleted)


def test_a_foreign_key_violation_that_reaches_the_handler_is_a_409_naming_the_field():
    """The backstop: a write that skipped the lock and lost the race (PostgreSQL's own error, caught at commit)."""
    world = make_world()
    with pytest.raises(IntegrityError) as caught, transaction.atomic():
        WorkspaceBinding.objects.create(
            user=world.user, device=world.device, environment=world.environment, project_id=uuid.uuid4(), local_path="/"
        )
    response = exception_handler(caught.value, {"view": WorkspaceBindingViewSet()})
    assert response.status_code == 409
    assert response.data["code"] == "conflict" and set(response.data["details"]) == {"projectId"}
