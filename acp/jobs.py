"""The core's periodic jobs, run by `manage.py sweep` (acp/sweep.py)."""

from datetime import timedelta

from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.conf import settings

from acp.sweep import JobReport

SIGN_IN_RECORDS = (AccessAttempt, AccessFailureLog, AccessLog)


def forget_old_sign_ins(*, now, dry_run: bool) -> JobReport:
    """Delete django-axes' admin sign-in records older than ACP_RETENTION_DAYS: a lockout needs only its last
    ACP_ADMIN_LOCKOUT_MINUTES, and these tables would otherwise grow with every sign-in, forever."""
    cutoff = now - timedelta(days=settings.ACP_RETENTION_DAYS)
    old = [model.objects.filter(attempt_time__lt=cutoff) for model in SIGN_IN_RECORDS]
    count = sum(records.count() for records in old)
    if not dry_run:
        for records in old:
            records.delete()
    verb = "would delete" if dry_run else "deleted"
    return JobReport("forget old sign-ins", count, f"{verb} {count} admin sign-in record(s) (django-axes)")
