"""Support staff's admin for workspaces and launches, and the operators' expire_launches command."""

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from sessions.choices import LaunchStatus
from sessions.models import Launch
from tests.sessions.conftest import make_launch

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(db):
    admin = get_user_model().objects.create_superuser("support", "support@example.com", "pw")
    client = Client()
    client.force_login(admin)
    return client


def test_changelists_and_change_pages_render(staff_client, workspace, django_assert_max_num_queries):
    for index in range(3):
        make_launch(workspace, initial_prompt=f"p{index}")
    launch = Launch.objects.first()
    with django_assert_max_num_queries(12):
        assert staff_client.get("/admin/acp_sessions/launch/").status_code == 200
    assert staff_client.get("/admin/acp_sessions/launch/?status__exact=pending").status_code == 200
    assert staff_client.get(f"/admin/acp_sessions/launch/?q={launch.id}").status_code == 200
    assert staff_client.get(f"/admin/acp_sessions/launch/{launch.id}/change/").status_code == 200
    assert staff_client.get("/admin/acp_sessions/workspace/").status_code == 200
    assert staff_client.get(f"/admin/acp_sessions/workspace/{workspace.id}/change/").status_code == 200


def test_search_by_id_finds_the_launch(staff_client, workspace):
    wanted = make_launch(workspace)
    make_launch(workspace)
    page = staff_client.get(f"/admin/acp_sessions/launch/?q={wanted.id}")
    assert page.context["cl"].result_count == 1


def test_launch_status_cannot_be_edited_by_hand(staff_client, workspace):
    launch = make_launch(workspace)
    url = f"/admin/acp_sessions/launch/{launch.id}/change/"
    staff_client.post(url, {"status": "acknowledged", "error_code": "x"})
    launch.refresh_from_db()
    assert launch.status == LaunchStatus.PENDING and launch.error_code == ""
    assert staff_client.get("/admin/acp_sessions/launch/add/").status_code == 403


def test_the_action_times_out_stuck_launches_and_skips_the_others(staff_client, workspace):
    now = timezone.now()
    stuck = make_launch(workspace, created_at=now - timedelta(hours=1), expires_at=now - timedelta(minutes=59))
    answered = make_launch(
        workspace, status=LaunchStatus.FAILED, error_code="machine_offline", created_at=now - timedelta(hours=1)
    )
    response = staff_client.post(
        "/admin/acp_sessions/launch/",
        {"action": "mark_timed_out", "_selected_action": [str(stuck.id), str(answered.id)]},
        follow=True,
    )
    messages = [str(message) for message in response.context["messages"]]
    assert "Marked 1 launch(es) timed out." in messages
    assert any("Skipped 1 launch(es)" in message for message in messages)
    stuck.refresh_from_db()
    answered.refresh_from_db()
    assert stuck.status == LaunchStatus.TIMED_OUT and stuck.error_code == "daemon_timeout" and stuck.timed_out_at
    assert answered.status == LaunchStatus.FAILED and answered.error_code == "machine_offline"


def test_expire_launches_times_out_only_pending_launches_past_their_deadline(workspace):
    now = timezone.now()
    stale = make_launch(workspace, created_at=now - timedelta(minutes=5), expires_at=now - timedelta(minutes=4))
    live = make_launch(workspace)
    out = StringIO()
    call_command("expire_launches", "--dry-run", stdout=out)
    assert "Would time out 1" in out.getvalue()
    assert Launch.objects.get(pk=stale.pk).status == LaunchStatus.PENDING

    out = StringIO()
    call_command("expire_launches", stdout=out)
    assert "Timed out 1" in out.getvalue()
    assert Launch.objects.get(pk=stale.pk).status == LaunchStatus.TIMED_OUT
    assert Launch.objects.get(pk=live.pk).status == LaunchStatus.PENDING
