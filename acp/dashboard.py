"""The support dashboard's figures: what is stuck, what is alive, what failed today."""

from datetime import timedelta

from django.db.models import Count, Q
from django.utils import timezone

STALE_PENDING_AFTER = timedelta(minutes=5)
RECENTLY_SEEN = timedelta(minutes=5)


def dashboard_counts(now=None) -> dict[str, int]:
    from acp.models import Device
    from bindings.models import SyncSession
    from commands.models import ControlCommand
    from sessions.models import Launch

    now = now or timezone.now()
    sessions = SyncSession.objects.aggregate(
        prepared=Count("pk", filter=Q(status="prepared")),
        superseded=Count("pk", filter=Q(status="superseded")),
        cancelled=Count("pk", filter=Q(status="cancelled")),
    )
    start_of_day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "prepared_sessions": sessions["prepared"],
        "superseded_sessions": sessions["superseded"],
        "cancelled_sessions": sessions["cancelled"],
        "stale_pending_commands": ControlCommand.objects.filter(
            status="pending", created_at__lt=now - STALE_PENDING_AFTER
        ).count(),
        "devices_seen_recently": Device.objects.filter(last_seen_at__gte=now - RECENTLY_SEEN).count(),
        "launches_timed_out_today": Launch.objects.filter(status="timed_out", updated_at__gte=start_of_day).count(),
    }
