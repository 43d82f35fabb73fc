"""`manage.py sweep`: every periodic job once — each app's `sweep_jobs` (acp/composition.py), then retention.

Safe to run from cron on several hosts at once: on PostgreSQL a session-level advisory lock lets one run at a
time, and a run that finds it taken does nothing (the running one does the work). SQLite serves one host.
"""

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from acp.cleanup import cleanup_sessions
from acp.composition import hooks

LOCK_KEY = zlib.crc32(b"acp.sweep")  # pg_advisory_lock's bigint key space is shared by the whole database


@dataclass(frozen=True)
class JobReport:
    name: str
    count: int  # rows the job changed (or would, with dry_run)
    message: str


def sweep(*, now: datetime | None = None, dry_run: bool = False) -> list[JobReport] | None:
    """Run every job in turn; None when another sweep holds the lock (nothing was done)."""
    with _sweep_lock() as acquired:
        if not acquired:
            return None
        now = now or timezone.now()
        reports = [job(now=now, dry_run=dry_run) for job in hooks("sweep_jobs")]
        return [*reports, retention(now=now, dry_run=dry_run)]


def retention(*, now: datetime, dry_run: bool) -> JobReport:
    """`cleanup_sessions` with its defaults (age ACP_RETENTION_DAYS)."""
    summary = cleanup_sessions(older_than=timedelta(days=settings.ACP_RETENTION_DAYS), now=now, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    details = ", ".join(f"{count} {label}" for label, count in summary.counts.items())
    return JobReport("retention", summary.total, f"{verb} {summary.total} rows ({details})")


@contextmanager
def _sweep_lock() -> Iterator[bool]:
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
        acquired = cursor.fetchone()[0]
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
