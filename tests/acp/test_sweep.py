"""`manage.py sweep`: every periodic job once, and one sweep at a time across hosts (a PostgreSQL advisory lock)."""

import threading
from datetime import timedelta
from io import StringIO

import pytest
from axes.models import AccessAttempt, AccessLog
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from acp.models import IdempotencyKey
from acp.sweep import LOCK_KEY, sweep
from commands.models import ControlCommand, LocalSession
from commands.services import thread_create
from sessions.models import Launch, Workspace
from tests.commands.conftest import make_command
from tests.concurrency import run_concurrently

pytestmark = pytest.mark.django_db(transaction=True)

JOBS = ("forget old sign-ins", "expire commands", "expire launches", "reap lost sessions", "retention")


@pytest.fixture
def chores(user, device):
    """Work for each job: 3 stale pending commands, 2 stale launches, 1 lost session, 2 stale idempotency keys."""
    long_ago = timezone.now() - timedelta(hours=2)
    workspace = Workspace.objects.create(user=user, name="w", default_machine=device)
    thread = thread_create(user=user)
    alive = LocalSession.objects.create(user=user, thread=thread, device=device, status="running")
    for _ in range(3):
        make_command(alive, created_at=long_ago)
    for _ in range(2):
        Launch.objects.create(user=user, workspace=workspace, machine=device, expires_at=long_ago)
    LocalSession.objects.create(user=user, thread=thread, device=device, status="created", created_at=long_ago)
    LocalSession.objects.filter(pk=alive.pk).update(last_heartbeat_at=timezone.now())
    for key in ("a", "b"):
        IdempotencyKey.objects.create(
            user=user, key=key, request_fingerprint="0" * 64, created_at=timezone.now() - timedelta(days=2)
        )
    sign_in = {"user_agent": "t", "ip_address": "127.0.0.1", "http_accept": "*/*", "path_info": "/admin/login/"}
    old, recent = timezone.now() - timedelta(days=40), timezone.now() - timedelta(days=1)
    for attempt_time, username in ((old, "staff"), (recent, "other")):
        fields = {**sign_in, "username": username}  # one attempt row per (username, address, agent)
        attempt = AccessAttempt.objects.create(**fields, get_data="", post_data="", failures_since_start=3)
        login = AccessLog.objects.create(**fields)
        for record in (attempt, login):  # attempt_time is auto_now_add
            type(record).objects.filter(pk=record.pk).update(attempt_time=attempt_time)
    return {
        "forget old sign-ins": 2,
        "expire commands": 3,
        "expire launches": 2,
        "reap lost sessions": 1,
        "retention": 2,
    }


def test_sweep_runs_every_job_and_reports_it(chores):
    out = StringIO()
    call_command("sweep", "--dry-run", stdout=out)
    assert "expire commands: would cancel 3 pending command(s)" in out.getvalue()
    assert ControlCommand.objects.filter(status="pending").count() == 3

    out = StringIO()
    call_command("sweep", stdout=out)
    lines = out.getvalue().splitlines()
    names = [line.split(":")[0] for line in lines[:-1]]
    assert sorted(names) == sorted(JOBS) and names[-1] == "retention"  # retention last, on the settled rows
    assert "reap lost sessions: ended 1 local session(s)" in out.getvalue()
    assert "retention: deleted 2 rows (" in out.getvalue()
    assert ControlCommand.objects.filter(status="pending").count() == 0
    assert set(Launch.objects.values_list("status", flat=True)) == {"timed_out"}
    assert LocalSession.objects.filter(status="failed", error="daemon_lost").count() == 1
    assert not IdempotencyKey.objects.exists()
    assert AccessAttempt.objects.count() == AccessLog.objects.count() == 1  # the recent ones stay


def test_two_concurrent_sweeps_do_each_job_once(chores):
    runs = run_concurrently([sweep, sweep])
    assert not any(isinstance(run, Exception) for run in runs), runs
    done = {job: 0 for job in JOBS}
    for reports in filter(None, runs):
        for report in reports:
            done[report.name] += report.count
    assert done == chores
    assert ControlCommand.objects.filter(status="cancelled").count() == 3
    assert LocalSession.objects.filter(status="failed").count() == 1


def test_a_sweep_that_finds_the_lock_taken_skips_and_says_so(chores):
    held, release = threading.Event(), threading.Event()

    def other_host():
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
                held.set()
                release.wait(timeout=30)
                cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
        finally:
            connection.close()

    holder = threading.Thread(target=other_host)
    holder.start()
    try:
        assert held.wait(timeout=10)
        out = StringIO()
        call_command("sweep", stdout=out)  # exits normally: cron sees success
        assert out.getvalue().startswith("Skipped: another sweep is running")
        assert ControlCommand.objects.filter(status="pending").count() == 3
    finally:
        release.set()
        holder.join(timeout=10)
    out = StringIO()
    call_command("sweep", stdout=out)
    assert "expire commands: cancelled 3 pending command(s)" in out.getvalue()
