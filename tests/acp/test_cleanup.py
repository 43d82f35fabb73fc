from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from acp.models import Device, Environment
from bindings.models import SyncSession, WorkspaceBinding
from commands.models import LocalSession

pytestmark = pytest.mark.django_db

OLD = timezone.now() - timedelta(days=45)


def make_bindings(user, count):
    device = Device.objects.create(user=user, name="d")
    environment = Environment.objects.create(user=user, name="e")
    return WorkspaceBinding.objects.bulk_create(
        [
            WorkspaceBinding(user=user, device=device, environment=environment, local_path=f"/w/{i}")
            for i in range(count)
        ]
    )


def sessions(bindings, count, status, *, direction="push", updated_at=OLD, start=0):
    """Insert `count` sessions spread over `bindings` in one statement (the ORM takes minutes for 100k)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH b AS (
                SELECT id, user_id, device_id, environment_id, row_number() OVER (ORDER BY id) - 1 AS n
                FROM {WorkspaceBinding._meta.db_table} WHERE id = ANY(%(bindings)s)
            )
            INSERT INTO {SyncSession._meta.db_table}
                (id, user_id, workspace_binding_id, direction, device_id, environment_id, status,
                 plan_signature, plan, metadata, created_at, updated_at)
            SELECT gen_random_uuid(), b.user_id, b.id, %(direction)s, b.device_id, b.environment_id, %(status)s,
                   'batch' || %(start)s || '-' || g, '{{}}'::jsonb, '{{}}'::jsonb, %(at)s, %(at)s
            FROM generate_series(0, %(count)s - 1) AS g JOIN b ON b.n = g %% %(nb)s
            """,
            {
                "bindings": [binding.pk for binding in bindings],
                "direction": direction,
                "status": status,
                "start": start,
                "at": updated_at,
                "count": count,
                "nb": len(bindings),
            },
        )
        assert cursor.rowcount == count


def run(*args):
    out = StringIO()
    call_command("cleanup_sessions", *args, stdout=out)
    return out.getvalue()


def test_cleanup_deletes_exactly_the_old_superseded_and_never_prepared(user):
    bindings = make_bindings(user, 1000)
    sessions(bindings, 100_000, "superseded")
    sessions(bindings, 1000, "prepared", start=200_000)
    prepared_before = set(SyncSession.objects.filter(status="prepared").values_list("pk", "updated_at"))

    output = run("--older-than", "30d", "--batch-size", "5000")
    assert "Deleted 100000 push/pull sessions." in output
    assert SyncSession.objects.filter(status="superseded").count() == 0
    assert set(SyncSession.objects.filter(status="prepared").values_list("pk", "updated_at")) == prepared_before

    assert "Deleted 0 push/pull sessions." in run("--older-than", "30d")
    assert SyncSession.objects.count() == 1000


def test_dry_run_counts_and_deletes_nothing(user):
    bindings = make_bindings(user, 10)
    sessions(bindings, 50, "superseded")
    sessions(bindings, 20, "cancelled", direction="pull", start=100)
    output = run("--dry-run", "--older-than", "30d")
    assert "Would delete 70 push/pull sessions." in output
    assert SyncSession.objects.count() == 70


def test_age_and_status_filters(user):
    bindings = make_bindings(user, 10)
    sessions(bindings, 10, "superseded")
    sessions(bindings, 10, "cancelled", direction="pull", start=100)
    sessions(bindings, 5, "superseded", updated_at=timezone.now() - timedelta(days=2), start=200)
    assert "Deleted 10 push/pull sessions." in run("--older-than", "30d", "--status", "cancelled", "--batch-size", "3")
    assert set(SyncSession.objects.values_list("status", flat=True)) == {"superseded"}
    assert "Deleted 10 push/pull sessions." in run("--older-than", "30d")
    assert "Deleted 5 push/pull sessions." in run("--older-than", "1d")


def test_default_age_comes_from_settings(user, settings):
    settings.ACP_RETENTION_DAYS = 60
    bindings = make_bindings(user, 1)
    sessions(bindings, 3, "superseded")  # 45 days old: younger than the default retention
    assert "Deleted 0 push/pull sessions." in run()
    assert SyncSession.objects.count() == 3
    settings.ACP_RETENTION_DAYS = 40
    assert "Deleted 3 push/pull sessions." in run()


@pytest.mark.parametrize(
    "args",
    [["--status", "prepared"], ["--older-than", "soon"], ["--batch-size", "0"], ["--status", "superseded,prepared"]],
)
def test_bad_options_are_refused(user, args):
    with pytest.raises(CommandError):
        run(*args)


def test_finished_launches_and_ended_commands_go_too_but_live_ones_stay(user):
    from commands.models import ControlCommand
    from sessions.models import Launch
    from tests.factories import build_world

    world = build_world(user)
    launch, command = world[Launch], world[ControlCommand]
    session, workspace, device = world[LocalSession], launch.workspace, launch.machine
    done_launch = Launch.objects.create(
        user=user,
        workspace=workspace,
        machine=device,
        status="timed_out",
        expires_at=OLD,
        timed_out_at=OLD,
        error_code="daemon_timeout",
    )
    done_command = ControlCommand.objects.create(
        user=user,
        session=session,
        thread=session.thread,
        command_type="message",
        payload={"text": "x"},
        status="cancelled",
        completed_at=OLD,
    )
    Launch.objects.update(updated_at=OLD)
    ControlCommand.objects.update(updated_at=OLD)

    output = run("--older-than", "30d")
    assert "Deleted 1 launches." in output and "Deleted 1 control commands." in output
    assert set(Launch.objects.values_list("pk", flat=True)) == {launch.pk}  # still pending
    assert set(ControlCommand.objects.values_list("pk", flat=True)) == {command.pk}  # still pending
    assert not Launch.objects.filter(pk=done_launch.pk).exists()
    assert not ControlCommand.objects.filter(pk=done_command.pk).exists()
