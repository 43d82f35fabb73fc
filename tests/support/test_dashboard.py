"""The support dashboard's figures, each from its app (acp.composition), on the admin index page."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from acp.dashboard import dashboard_counts
from bindings.models import SyncSession
from commands.models import ControlCommand, LocalSession
from sessions.models import Launch
from tests.conftest import make_user
from tests.factories import build_world

pytestmark = pytest.mark.django_db


def test_each_figure_counts_what_its_label_says(user):
    world = build_world(user)  # one prepared push and pull, a pending command, a device seen now, a pending launch
    now = timezone.now()
    SyncSession.objects.filter(pk=world[("pull", SyncSession)].pk).update(status="superseded")
    ControlCommand.objects.filter(pk=world[ControlCommand].pk).update(created_at=now - timedelta(minutes=6))
    session = world[LocalSession]
    ControlCommand.objects.create(user=user, session=session, thread=session.thread, command_type="pause")  # fresh
    Launch.objects.filter(pk=world[Launch].pk).update(status="timed_out", timed_out_at=now, error_code="daemon_timeout")
    expected = {
        "prepared_sessions": 1,
        "superseded_sessions": 1,
        "cancelled_sessions": 0,
        "stale_pending_commands": 1,
        "devices_seen_recently": 1,
        "launches_timed_out_today": 1,
    }
    assert dashboard_counts(now) == expected

    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    page = client.get("/admin/").content.decode()
    shown = dict(re.findall(r'data-count="(\w+)">(\d+)<', page))
    assert {name: int(count) for name, count in shown.items()} == expected
