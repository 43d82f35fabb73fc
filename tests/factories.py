"""Object graphs for tests that need one of everything."""

from datetime import timedelta

from django.utils import timezone

from acp.models import ApiToken, Device, Environment, IdempotencyKey, PairingToken, Project
from acp.services import pairing_token_create, token_create
from bindings.models import SyncSession, WorkspaceBinding
from commands.models import ControlCommand, LocalSession, Thread, ThreadEvent
from commands.services import NewEvent, thread_events_append
from sessions.models import Launch, Workspace


def build_world(user):
    """One of everything, owned by `user`, wired together the way the API creates them."""
    now = timezone.now()
    project = Project.objects.create(user=user, name="p")
    environment = Environment.objects.create(user=user, name="e")
    device = Device.objects.create(user=user, name="d", last_seen_at=now)
    binding = WorkspaceBinding.objects.create(
        user=user, device=device, environment=environment, project=project, local_path="/w"
    )
    common = {"user": user, "workspace_binding": binding, "device": device, "environment": environment}
    push = SyncSession.objects.create(**common, direction="push", plan_signature="s")
    pull = SyncSession.objects.create(**common, direction="pull", plan_signature="s")
    thread = Thread.objects.create(user=user, environment=environment)
    session = LocalSession.objects.create(user=user, thread=thread, device=device, status="running")
    command = ControlCommand.objects.create(user=user, session=session, thread=thread, command_type="pause")
    (event,) = thread_events_append(
        thread_id=thread.pk, events=[NewEvent("output", source="daemon", session_id=session.pk)]
    )
    workspace = Workspace.objects.create(user=user, name="w", project=project, default_machine=device)
    launch = Launch.objects.create(
        user=user, workspace=workspace, machine=device, expires_at=now + timedelta(seconds=10)
    )
    token = token_create(user=user, device=device, name="daemon").token
    idempotency_key = IdempotencyKey.objects.create(
        user=user, key=f"key-{command.pk}", request_fingerprint="0" * 64, resource_id=command.pk
    )
    pairing_token = pairing_token_create(user=user, name="pairing").pairing_token
    return {
        ApiToken: token,
        PairingToken: pairing_token,
        IdempotencyKey: idempotency_key,
        Project: project,
        Environment: environment,
        Device: device,
        WorkspaceBinding: binding,
        ("push", SyncSession): push,
        ("pull", SyncSession): pull,
        Thread: thread,
        LocalSession: session,
        ControlCommand: command,
        ThreadEvent: event,
        Workspace: workspace,
        Launch: launch,
    }
