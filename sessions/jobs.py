"""The sessions app's periodic jobs, run by `manage.py sweep` (acp/sweep.py)."""

from acp.sweep import JobReport
from sessions.services import launches_expire


def expire_launches(*, now, dry_run: bool) -> JobReport:
    """Time out launches pending past their deadline (as `manage.py expire_launches`)."""
    count = launches_expire(now=now, dry_run=dry_run)
    verb = "would time out" if dry_run else "timed out"
    return JobReport("expire launches", count, f"{verb} {count} stale pending launch(es)")
