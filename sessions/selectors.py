"""Reads of launches."""

from django.db.models import QuerySet
from django.utils import timezone

from acp.cleanup import Target
from sessions.choices import LAUNCH_TERMINAL_STATES, LaunchStatus
from sessions.models import Launch


def launch_queue(*, machine_id, now=None) -> QuerySet[Launch]:
    """A machine's launches its daemon should start: pending and still within their deadline, oldest first."""
    now = now or timezone.now()
    return Launch.objects.filter(machine_id=machine_id, status=LaunchStatus.PENDING, expires_at__gt=now).order_by(
        "created_at", "id"
    )



# --- retention and the support dashboard (acp.composition) ----------------------------------------------------------


def retention_targets(*, cutoff, now, **options) -> list[Target]:
    """Finished launches last changed before `cutoff` (a pending one is never touched)."""
    return [Target("launches", Launch.objects.filter(status__in=LAUNCH_TERMINAL_STATES, updated_at__lt=cutoff))]


def dashboard_counts(*, now) -> dict[str, int]:
    start_of_day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "launches_timed_out_today": Launch.objects.filter(
            status=LaunchStatus.TIMED_OUT, updated_at__gte=start_of_day
        ).count(),
    }
