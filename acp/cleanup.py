"""Retention: delete, past an age, what each ACP app says may go (its `retention` hook, see acp/composition.py).

Rows go in batches by primary key, each batch its own short transaction, so the API keeps serving and
memory stays flat (no list of ids is held: each batch is a key range). Prepared sessions are never touched:
the delete itself re-checks every condition, so a row that changed since its batch was found stays.
"""

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.exceptions import ImproperlyConfigured
from django.db import models, transaction

from acp.composition import hooks


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


def cleanup_targets(*, cutoff: datetime, now: datetime, **options) -> list[Target]:
    """Every app's targets, in app order. `options` go to every app (e.g. `sync_statuses`, the bindings app's);
    an app refuses a value it cannot honour with `ValueError`."""
    return [target for retention in hooks("retention") for target in retention(cutoff=cutoff, now=now, **options)]


def cleanup_sessions(
    *,
    older_than: timedelta,
    now: datetime,
    batch_size: int = 5000,
    dry_run: bool = False,
    on_progress: Callable[[str, int, int], None] | None = None,
    **options,
) -> CleanupSummary:
    """Delete what `cleanup_targets` selects (or only count it, with `dry_run`); returns counts per target."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1.")
    summary = CleanupSummary(dry_run=dry_run)
    for target in cleanup_targets(cutoff=now - older_than, now=now, **options):
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
        with transaction.atomic(using=queryset.db):
            upper = next(iter(keys[batch_size - 1 : batch_size]), None)  # None: the rest fits in one batch
            batch = remaining if upper is None else remaining.filter(pk__lte=upper)
            deleted = _raw_delete(batch)
        if upper is None:
            if deleted:
                yield deleted
            return
        last_pk = upper
        yield deleted


def _raw_delete(rows: models.QuerySet) -> int:
    """One DELETE of `rows` (no per-row signals or cascade collection), after doing in SQL what each foreign key
    to them asks: SET_NULL clears it, CASCADE deletes the referencing rows (theirs first). Call inside the batch's
    transaction. A model nothing points at costs no extra statement."""
    for relation in referencing_relations(rows.model):
        referencing = relation.related_model._base_manager.using(rows.db).filter(
            **{f"{relation.field.name}__in": rows.values(relation.field.target_field.attname)}
        )
        if relation.on_delete is models.SET_NULL:
            referencing.update(**{relation.field.name: None})
        else:
            _raw_delete(referencing)
    return rows._raw_delete(rows.db)


@functools.cache
def referencing_relations(model: type[models.Model]) -> tuple[models.ForeignObjectRel, ...]:
    """Every foreign key (and one-to-one) pointing at `model`, `related_name="+"` ones included, whose
    `on_delete` the database does not do for us. Refuses a kind retention cannot honour in one statement."""
    relations = []
    for relation in model._meta.get_fields(include_hidden=True):
        if not (relation.auto_created and not relation.concrete and (relation.one_to_many or relation.one_to_one)):
            continue
        if relation.on_delete is models.DO_NOTHING:
            continue  # the database's own ON DELETE rule applies
        if relation.on_delete not in (models.SET_NULL, models.CASCADE):
            raise ImproperlyConfigured(
                f"{relation.related_model._meta.label}.{relation.field.name} points at {model._meta.label} with "
                f"on_delete={relation.on_delete.__name__}, which retention does not implement: use SET_NULL or "
                "CASCADE, or leave such rows out of the model's retention target."
            )
        relations.append(relation)
    return tuple(relations)
