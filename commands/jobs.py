"""The commands app's periodic jobs, run by `manage.py sweep` (acp/sweep.py) with the settings' ages."""

from django.conf import settings

from acp.durations import parse_duration
from acp.sweep import JobReport
from commands.services import commands_expire, local_sessions_reap_lost


def expire_commands(*, now, dry_run: bool) -> JobReport:
    """Cancel commands pending longer than ACP_COMMAND_TTL (as `manage.py expire_commands`)."""
    summary = commands_expire(older_than=parse_duration(settings.ACP_COMMAND_TTL), now=now, dry_run=dry_run)
    verb = "would cancel" if dry_run else "cancelled"
    return JobReport(
        "expire commands",
        summary.commands,
        f"{verb} {summary.commands} pending command(s) of {summary.sessions} session(s) older than "
        f"{settings.ACP_COMMAND_TTL}",
    )


def reap_lost_sessions(*, now, dry_run: bool) -> JobReport:
    """End `failed` (daemon_lost) live sessions silent for ACP_SESSION_LOST_AFTER, cancelling their commands."""
    summary = local_sessions_reap_lost(
        lost_after=parse_duration(settings.ACP_SESSION_LOST_AFTER), now=now, dry_run=dry_run
    )
    verb = "would end" if dry_run else "ended"
    return JobReport(
        "reap lost sessions",
        summary.sessions,
        f"{verb} {summary.sessions} local session(s) silent for {settings.ACP_SESSION_LOST_AFTER} as failed "
        f"(daemon_lost), cancelling {summary.commands} command(s)",
    )
