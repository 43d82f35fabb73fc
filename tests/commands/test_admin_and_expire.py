"""Support's admin pages and the operators' `expire_commands`."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from commands.models import ControlCommand, LocalSession
from commands.services import commands_expire, local_session_create
from tests.commands.conftest import make_command
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client():
    client = Client()
    client.force_login(make_user("support", is_staff=True, is_superuser=True))
    return client


# --- expire_commands ---


def test_expire_cancels_only_old_pending_commands(session):
    now = timezone.now()
    old = make_command(session, created_at=now - timedelta(hours=2))
    old_acknowledged = make_command(session, status="acknowledged", created_at=now - timedelta(hours=2))
    fresh = make_command(session, created_at=now - timedelta(minutes=10))

    summary = commands_expire(older_than=timedelta(hours=1), now=now, dry_run=True)
    assert (summary.commands, summary.sessions) == (1, 1)
    assert ControlCommand.objects.get(pk=old.pk).status == "pending"

    summary = commands_expire(older_than=timedelta(hours=1), now=now)
    assert (summary.commands, summary.sessions) == (1, 1) and summary.cutoff == now - timedelta(hours=1)
    old.refresh_from_db()
    assert old.status == "cancelled" and old.completed_at == now
    assert ControlCommand.objects.get(pk=old_acknowledged.pk).status == "acknowledged"
    assert ControlCommand.objects.get(pk=fresh.pk).status == "pending"
    assert commands_expire(older_than=timedelta(hours=1), now=now).commands == 0


def test_expire_commands_command(session, settings):
    now = timezone.now()
    make_command(session, created_at=now - timedelta(minutes=45))
    make_command(session, created_at=now - timedelta(minutes=5))

    out = StringIO()
    call_command("expire_commands", "--older-than", "30m", "--dry-run", stdout=out)
    assert "Would cancel 1 pending command(s) of 1 session(s)" in out.getvalue()
    assert ControlCommand.objects.filter(status="pending").count() == 2

    settings.ACP_COMMAND_TTL = "1m"  # the default comes from the setting
    out = StringIO()
    call_command("expire_commands", stdout=out)
    assert "Cancelled 2 pending command(s) of 1 session(s)" in out.getvalue() and "older than 1m" in out.getvalue()
    assert ControlCommand.objects.filter(status="pending").count() == 0


@pytest.mark.parametrize("value", ["soon", "10", "-5m", "0s"])
def test_expire_commands_refuses_bad_durations(value):
    with pytest.raises(CommandError):
        call_command("expire_commands", "--older-than", value, stdout=StringIO())


# --- admin ---


def test_admin_pages_render(staff_client, session):
    command = make_command(session, payload={"text": "hello <b>"})
    command.result = {"ok": True}
    command.save()
    pages = [
        reverse("admin:commands_thread_changelist"),
        reverse("admin:commands_thread_change", args=[session.thread_id]),
        reverse("admin:commands_localsession_changelist") + "?status__exact=running",
        reverse("admin:commands_controlcommand_changelist") + "?command_type__exact=message&status__exact=pending",
        reverse("admin:commands_controlcommand_change", args=[command.id]),
        reverse("admin:acp_idempotencykey_changelist"),
    ]
    for page in pages:
        assert staff_client.get(page).status_code == 200, page
    detail = staff_client.get(reverse("admin:commands_localsession_change", args=[session.id])).content.decode()
    assert reverse("admin:commands_controlcommand_change", args=[command.id]) in detail  # the commands inline
    assert "&quot;text&quot;: &quot;hello &lt;b&gt;&quot;" in detail  # pretty JSON, escaped
    assert '"ok": true' in staff_client.get(
        reverse("admin:commands_controlcommand_change", args=[command.id])
    ).content.decode().replace("&quot;", '"')


def test_admin_changelists_do_not_query_per_row(staff_client, user, thread, device, django_assert_max_num_queries):
    for _ in range(5):
        session = local_session_create(user=user, thread=thread, device=device, status="running")
        make_command(session)
    staff_client.get(reverse("admin:commands_controlcommand_changelist"))  # warm caches (content types)
    with django_assert_max_num_queries(12):
        assert staff_client.get(reverse("admin:commands_controlcommand_changelist")).status_code == 200
    with django_assert_max_num_queries(12):
        assert staff_client.get(reverse("admin:commands_localsession_changelist")).status_code == 200


def test_admin_action_cancels_pending_commands_and_reports_skipped(staff_client, session):
    pending = make_command(session)
    done = make_command(session, status="completed")
    response = staff_client.post(
        reverse("admin:commands_controlcommand_changelist"),
        {"action": "cancel_pending_commands", "_selected_action": [str(pending.id), str(done.id)]},
        follow=True,
    )
    messages = [str(m) for m in response.context["messages"]]
    assert "Cancelled 1 pending command(s)." in messages
    assert "Skipped 1 command(s) that were not pending." in messages
    pending.refresh_from_db()
    done.refresh_from_db()
    assert pending.status == "cancelled" and pending.completed_at is not None and done.status == "completed"


def test_admin_action_ends_sessions_through_the_service(staff_client, session, user, thread, device):
    ended = local_session_create(user=user, thread=thread, device=device)
    LocalSession.objects.filter(pk=ended.pk).update(status="failed", completed_at=timezone.now())
    command = make_command(session)
    response = staff_client.post(
        reverse("admin:commands_localsession_changelist"),
        {"action": "cancel_sessions", "_selected_action": [str(session.id), str(ended.id)]},
        follow=True,
    )
    messages = [str(m) for m in response.context["messages"]]
    assert "Cancelled 1 session(s)." in messages and "Skipped 1 session(s) that had already ended." in messages
    session.refresh_from_db()
    assert session.status == "cancelled" and ControlCommand.objects.get(pk=command.pk).status == "cancelled"


def test_admin_status_is_read_only(staff_client, session):
    command = make_command(session)
    url = reverse("admin:commands_controlcommand_change", args=[command.id])
    staff_client.post(url, {"status": "completed", "command_type": "cancel"})
    command.refresh_from_db()
    assert command.status == "pending" and command.command_type == "message"
    assert reverse("admin:commands_controlcommand_add")  # the route exists, but adding is refused
    assert staff_client.get(reverse("admin:commands_controlcommand_add")).status_code == 403
