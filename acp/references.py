"""Writes that reference other rows, made safe against a concurrent delete of those rows.

PostgreSQL checks Django's foreign keys at commit (they are DEFERRABLE INITIALLY DEFERRED), so a write that
names a row another request is deleting fails only then, as an IntegrityError. A writer therefore takes, up
front, the lock PostgreSQL's own check would take (FOR KEY SHARE on each referenced row): a delete that locked
the row first (see `delete_locked`) has committed by the time the writer gets it, and the writer sees the row
gone; a delete that comes later waits for the writer and then finds its row (SET NULL / CASCADE applies).

Lock order, to stay clear of deadlocks: the referenced rows first, then the row being written.
"""

from __future__ import annotations

from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import Model

from acp import domain

FOREIGN_KEY_VIOLATION = "23503"
DEADLOCK_DETECTED = "40P01"


def gone_references(**references: Model | None) -> list[str]:
    """Lock each referenced row (FOR KEY SHARE) until the transaction ends; the names of those that no longer
    exist. One statement for all of them. Must run inside `transaction.atomic`."""
    references = {name: obj for name, obj in references.items() if obj is not None}
    if not references:
        return []
    quote = connection.ops.quote_name
    lock = " FOR KEY SHARE" if connection.vendor == "postgresql" else ""
    probes = [
        f"(SELECT 1 FROM {quote(obj._meta.db_table)} WHERE {quote(obj._meta.pk.column)} = %s{lock})"
        for obj in references.values()
    ]
    params = [obj._meta.pk.get_db_prep_value(obj.pk, connection) for obj in references.values()]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(probes)}", params)
        found = cursor.fetchone()
    return [name for name, present in zip(references, found, strict=True) if present is None]


def lock_references(**references: Model | None) -> None:
    """`gone_references`, raising `InvalidInput` that names each field whose row no longer exists."""
    gone = gone_references(**references)
    if gone:
        raise domain.InvalidInput(
            {name: f'Invalid pk "{references[name].pk}" - object does not exist.' for name in gone}
        )


def lock_model_fields(fields: dict, request_names: dict[str, str]) -> None:
    """`lock_references` for the reference fields among a service's `fields` (model field → the request field
    a refusal names), e.g. `{"project": "projectId"}`."""
    lock_references(**{request_names[name]: value for name, value in fields.items() if name in request_names})


def lock_row(instance: Model) -> None:
    """Lock the row being changed (FOR NO KEY UPDATE); `NotFound` if it was deleted meanwhile, so a save cannot
    quietly update nothing or insert the row again."""
    manager = type(instance)._default_manager
    if not manager.select_for_update(no_key=True).filter(pk=instance.pk).exists():
        raise domain.NotFound()


def delete_locked(instance: Model) -> None:
    """Delete `instance` and what cascades from it, serialised with writers that reference it.

    The row is locked first (FOR UPDATE: it waits for writers holding FOR KEY SHARE), so the collector then sees
    their committed rows. A writer that skipped the lock can still commit a reference in between (or deadlock
    with it): then the delete is tried once more; a second failure reaches the exception handler (409).
    """
    manager = type(instance)._default_manager
    for attempt in range(2):
        try:
            with transaction.atomic():
                locked = manager.select_for_update().filter(pk=instance.pk).first()
                if locked is None:
                    raise domain.NotFound()
                locked.delete()
                return
        except (IntegrityError, OperationalError) as exc:
            if not is_retryable(exc) or attempt:
                raise
    raise AssertionError("unreachable")


def is_foreign_key_violation(exc: Exception) -> bool:
    return isinstance(exc, IntegrityError) and (
        _sqlstate(exc) == FOREIGN_KEY_VIOLATION or "FOREIGN KEY constraint failed" in str(exc)  # SQLite
    )


def is_deadlock(exc: Exception) -> bool:
    return isinstance(exc, OperationalError) and _sqlstate(exc) == DEADLOCK_DETECTED


def is_retryable(exc: Exception) -> bool:
    """A write and a delete crossed: trying again sees the other one's committed result."""
    return is_foreign_key_violation(exc) or is_deadlock(exc)


def _sqlstate(exc: Exception) -> str | None:
    return getattr(getattr(exc.__cause__, "diag", None), "sqlstate", None)
