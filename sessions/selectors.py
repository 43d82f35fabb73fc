"""Reads of launches."""

from django.db.models import QuerySet
from django.utils import timezone

from sessions.choices import LaunchStatus
from sessions.models import Launch


def launch_queue(*, machine_id, now=None) -> QuerySet[Launch]:
    """A machine's launches its daemon should start: pending and still within their deadline, oldest first."""
    now = now or timezone.now()
    return Launch.objects.filter(machine_id=machine_id, status=LaunchStatus.PENDING, expires_at__gt=now).order_by(
        "created_at", "id"
    )
