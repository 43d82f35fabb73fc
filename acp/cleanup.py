"""Retention: delete ended push/pull sessions, finished launches and ended commands past an age.

Rows go in batches by primary key, each batch its own short transaction, so the API keeps serving and
memory stays flat (no list of ids is held: each batch is a key range). Prepared sessions are never touched:
the delete itself re-checks every condition, so a row that changed since its batch was found stays.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import models, transaction

DEFAULT_SYNC_STATUSES = ("superseded", "cancelled")
CLEANABLE_SYNC_STATUSES = frozenset(DEFAULT_SYNC_STATUSES)


@dataclass(frozen=True)
class Target:
    label: str
    queryset: models.QuerySet  # what may go: ended rows, last changed before the cutoff


@dataclass
class CleanupSummary:
    dry_run: bool
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def cleanup_targets(*, cutoff: datetime, sync_statuses=DEFAULT_SYNC_STATUSES) -> list[Target]:
    from bindings.models import SyncSession
    from commands.choices import COMMAND_TERMINAL_STATES
    from commands.models import ControlCommand
    from sessions.choices import LAUNCH_TERMINAL_STATES
    from sessions.models import Launch

    unknown = set(sync_statuses) - CLEANABLE_SYNC_STATUSES
    if unknown:
        raise ValueError(f"Only {sorted(CLEANABLE_SYNC_STATUSES)} sessions may be cleaned up, not {sorted(unknown)}.")
    return [
        Target("push/pull sessions", SyncSession.objects.filter(status__in=sync_statuses, updated_at__lt=cutoff)),
        Target("launches", Launch.objects.filter(status__in=LAUNCH_TERMINAL_STATES, updated_at__lt=cutoff)),
        Target(
            "control commands", ControlCommand.objects.filter(status__in=COMMAND_TERMINAL_STATES, updated_at__lt=cutoff)
        ),
    ]


def cleanup_sessions(
    *,
    older_than: timedelta,
    now: datetime,
    sync_statuses=DEFAULT_SYNC_STATUSES,
    batch_size: int = 5000,
    dry_run: bool = False,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> CleanupSummary:
    """Delete what `cleanup_targets` selects (or only count it, with `dry_run`); returns counts per target."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1.")
    summary = CleanupSummary(dry_run=dry_run)
    for target in cleanup_targets(cutoff=now - older_than, sync_statuses=sync_statuses):
        expected = target.queryset.count()
        if dry_run:
            summary.counts[target.label] = expected
            continue
        deleted = 0
        for batch_deleted in _delete_in_batches(target.queryset, batch_size):
            deleted += batch_deleted
            if on_progress:
                on_progress(target.label, deleted, expected)
        summary.counts[target.label] = deleted
    return summary


def _delete_in_batches(queryset: models.QuerySet, batch_size: int) -> Iterator[int]:
    """Delete `queryset` in primary-key order, at most `batch_size` rows per transaction.

    Each batch is a key range whose upper end the database finds (one key comes back), deleted with every
    condition re-checked. No list of keys travels through Python: building and sending `IN (5000 keys)` cost
    more CPU than the delete itself.
    """
    last_pk = None
    while True:
        remaining = queryset if last_pk is None else queryset.filter(pk__gt=last_pk)
        keys = remaining.order_by("pk").values_list("pk", flat=True)
        with transaction.atomic():
            upper = next(iter(keys[batch_size - 1 : batch_size]), None)  # None: the rest fits in one batch
            batch = remaining if upper is None else remaining.filter(pk__lte=upper)
            # _raw_delete: one DELETE, no per-row signals or cascade collection; nothing references these rows.
            deleted = batch._raw_delete(queryset.db)
        if upper is None:
            if deleted:
                yield deleted
            return
        last_pk = upper
        yield deleted
