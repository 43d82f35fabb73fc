"""Reads of the bindings app that are more than one line."""

from django.db.models import Count, Q

from acp.cleanup import Target
from bindings.choices import SyncSessionStatus
from bindings.models import SyncSession, WorkspaceBinding


def binding_is_visible(*, user, binding_id, device_id=None) -> bool:
    """Whether `binding_id` is one of `user`'s bindings (and, for a device token, one of `device_id`'s)."""
    bindings = WorkspaceBinding.objects.filter(pk=binding_id, user=user)
    if device_id is not None:
        bindings = bindings.filter(device_id=device_id)
    return bindings.exists()


# --- retention and the support dashboard (acp.composition) ----------------------------------------------------------

CLEANABLE_SYNC_STATUSES = (SyncSessionStatus.SUPERSEDED.value, SyncSessionStatus.CANCELLED.value)


def retention_targets(*, cutoff, now, sync_statuses=CLEANABLE_SYNC_STATUSES, **options):
    """Ended push/pull sessions (by default both kinds; `sync_statuses` narrows it) last changed before `cutoff`.
    A prepared session is never one: asking for it raises `ValueError`."""
    unknown = set(sync_statuses) - set(CLEANABLE_SYNC_STATUSES)
    if unknown:
        raise ValueError(f"Only {sorted(CLEANABLE_SYNC_STATUSES)} sessions may be cleaned up, not {sorted(unknown)}.")
    return [Target("push/pull sessions", SyncSession.objects.filter(status__in=sync_statuses, updated_at__lt=cutoff))]


def dashboard_counts(*, now) -> dict[str, int]:
    sessions = SyncSession.objects.aggregate(
        prepared=Count("pk", filter=Q(status=SyncSessionStatus.PREPARED)),
        superseded=Count("pk", filter=Q(status=SyncSessionStatus.SUPERSEDED)),
        cancelled=Count("pk", filter=Q(status=SyncSessionStatus.CANCELLED)),
    )
    return {
        "prepared_sessions": sessions["prepared"],
        "superseded_sessions": sessions["superseded"],
        "cancelled_sessions": sessions["cancelled"],
    }
