"""The support role end to end in the admin: it sees everything, runs the cancel actions, changes nothing."""

import pytest
from django.utils import timezone

from acp.models import Device, Environment
from bindings.models import SyncSession, WorkspaceBinding

pytestmark = pytest.mark.django_db


@pytest.fixture
def push_sessions(user):
    device = Device.objects.create(user=user, name="d", last_seen_at=timezone.now())
    environment = Environment.objects.create(user=user, name="e")
    binding = WorkspaceBinding.objects.create(user=user, device=device, environment=environment, local_path="/x")
    common = {"user": user, "workspace_binding": binding, "device": device, "environment": environment}
    prepared = SyncSession.objects.create(**common, direction="push", plan_signature="a")
    superseded = SyncSession.objects.create(**common, direction="push", plan_signature="b", status="superseded")
    return prepared, superseded


def test_support_runs_the_cancel_action_and_wrong_states_are_skipped(support_client, push_sessions):
    prepared, superseded = push_sessions
    response = support_client.post(
        "/admin/bindings/syncsession/",
        {"action": "cancel_prepared_sessions", "_selected_action": [prepared.pk, superseded.pk]},
        follow=True,
    )
    assert response.status_code == 200
    texts = [str(m) for m in response.context["messages"]]
    assert any("Cancelled 1" in t for t in texts), texts
    assert any("superseded" in t.lower() for t in texts), texts
    prepared.refresh_from_db()
    superseded.refresh_from_db()
    assert (prepared.status, superseded.status) == ("cancelled", "superseded")


def test_support_cancels_pending_commands(support_client, push_sessions, user):
    from commands.models import ControlCommand, LocalSession, Thread

    prepared, _ = push_sessions
    thread = Thread.objects.create(user=user)
    session = LocalSession.objects.create(user=user, thread=thread, device=prepared.device, status="running")
    pending = ControlCommand.objects.create(user=user, session=session, thread=thread, command_type="message")
    response = support_client.post(
        "/admin/commands/controlcommand/",
        {"action": "cancel_pending_commands", "_selected_action": [pending.pk]},
        follow=True,
    )
    assert response.status_code == 200
    pending.refresh_from_db()
    assert pending.status == "cancelled"


@pytest.mark.parametrize(
    "url",
    [
        "/admin/",
        "/admin/bindings/syncsession/",
        "/admin/bindings/workspacebinding/",
        "/admin/commands/controlcommand/",
        "/admin/commands/localsession/",
        "/admin/commands/thread/",
        "/admin/acp_sessions/launch/",
        "/admin/acp_sessions/workspace/",
        "/admin/acp/device/",
        "/admin/acp/apitoken/",
        "/admin/acp/project/",
        "/admin/acp/environment/",
    ],
)
def test_support_can_view_every_console_page(support_client, push_sessions, url):
    assert support_client.get(url).status_code == 200


def test_support_cannot_change_or_delete(support_client, push_sessions):
    prepared, _ = push_sessions
    change_url = f"/admin/bindings/syncsession/{prepared.pk}/change/"
    page = support_client.get(change_url)
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert support_client.post(change_url, {"plan_signature": "hacked"}).status_code == 403
    assert support_client.post(f"/admin/bindings/syncsession/{prepared.pk}/delete/", {"post": "yes"}).status_code == 403
    assert support_client.get(f"/admin/acp/device/{prepared.device_id}/delete/").status_code == 403
    assert support_client.get("/admin/acp/project/add/").status_code == 403
    prepared.refresh_from_db()
    assert prepared.plan_signature == "a" and prepared.status == "prepared"
