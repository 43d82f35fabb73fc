"""Every write of the bindings app: bindings, and the push/pull session state machine."""

import functools

from django.db import IntegrityError, transaction
from django.utils import timezone

from acp.domain import Conflict, InvalidTransition, NotFound, Outcome
from acp.references import lock_model_fields, lock_row
from acp.serving import optimised, rawsql
from bindings.choices import ALLOWED_TRANSITIONS, SyncDirection, SyncSessionStatus
from bindings.models import ONE_PREPARED_CONSTRAINT, SyncSession, WorkspaceBinding

# The request fields that name the binding's references (for a refusal that says which one went away).
_REFERENCE_FIELDS = {"device": "deviceId", "environment": "environmentId", "project": "projectId"}


@transaction.atomic
def binding_create(*, user, **fields) -> WorkspaceBinding:
    """Create a binding; `InvalidInput` naming the field if its device, environment or project was deleted."""
    lock_model_fields(fields, _REFERENCE_FIELDS)
    return WorkspaceBinding.objects.create(user=user, **fields)


@transaction.atomic
def binding_update(*, binding: WorkspaceBinding, **fields) -> WorkspaceBinding:
    """Change a binding; `InvalidInput` for a reference deleted meanwhile, `NotFound` if the binding was."""
    lock_model_fields(fields, _REFERENCE_FIELDS)
    lock_row(binding)
    for name, value in fields.items():
        setattr(binding, name, value)
    binding.save(update_fields=[*fields, "updated_at"])
    return binding


def sync_session_prepare(
    *,
    user,
    binding_id,
    direction: SyncDirection,
    plan_signature: str,
    plan: dict,
    metadata: dict | None = None,
    device_id=None,
) -> Outcome[SyncSession]:
    """Prepare a push or pull session on one of `user`'s bindings (of `device_id` only, if given; else `NotFound`).

    Guarantees: a prepared session of that direction with the same signature and plan is returned as is
    (`changed=False`); the same signature with another plan raises `Conflict`; otherwise every prepared
    session of that direction is superseded and a new prepared one created, atomically (`changed=True`).
    At most one session per (binding, direction) is ever prepared; a concurrent writer that slips past the binding
    lock hits the database constraint, and the prepare is answered again from the committed state.
    """
    arguments = {
        "user": user,
        "binding_id": binding_id,
        "direction": direction,
        "plan_signature": plan_signature,
        "plan": plan,
        "metadata": metadata if metadata is not None else {},
        "device_id": device_id,
    }
    try:
        return _prepare(**arguments)
    except IntegrityError as exc:
        if not _violates(exc, ONE_PREPARED_CONSTRAINT):
            raise
    # Our transaction was rolled back; the row that beat us is committed now, so this answer sees it.
    return _prepare(**arguments)


@transaction.atomic
def _prepare(*, user, binding_id, direction, plan_signature, plan, metadata, device_id) -> Outcome[SyncSession]:
    binding = _lock_binding(binding_id=binding_id, user_id=user.pk, device_id=device_id)
    if binding is None:
        raise NotFound()

    prepared = _supersede_unless_signed(
        binding_id=binding.pk, direction=direction, plan_signature=plan_signature, now=timezone.now()
    )
    if prepared is not None and prepared.plan_signature == plan_signature:
        if prepared.plan != plan:
            raise Conflict(prepared, "A prepared session with this planSignature has a different plan.")
        return Outcome(prepared, changed=False)

    session = SyncSession(
        user_id=binding.user_id,
        workspace_binding_id=binding.pk,
        direction=direction,
        device_id=binding.device_id,
        environment_id=binding.environment_id,
        project_id=binding.project_id,
        status=SyncSessionStatus.PREPARED,
        plan_signature=plan_signature,
        plan=plan,
        metadata=metadata,
    )
    if optimised():
        rawsql.insert(session)
    else:
        session.save(force_insert=True)
    return Outcome(session, changed=True)


# The prepare is the API's hottest write, so its three statements are written out (acp/serving/rawsql.py): Django
# took longer to compile them than PostgreSQL took to run them (bench/run.py --profile). With ACP_SERVING=stock
# they go through the ORM.


def _lock_binding(*, binding_id, user_id, device_id) -> WorkspaceBinding | None:
    """The caller's binding (of `device_id` only, if given), locked until the transaction ends.

    FOR NO KEY UPDATE serialises prepares of one binding without blocking inserts that reference it. Its device,
    environment and project are locked first (FOR KEY SHARE, while the row is read): the new session refers to
    them, and a delete of one of them locks it before the binding (acp/references.py); were they left to the
    commit's own foreign-key check, which takes them last, the two could deadlock.
    """
    criteria = {"id": binding_id, "user": user_id}
    if device_id is not None:
        criteria["device"] = device_id
    if not optimised():
        bindings = WorkspaceBinding.objects.select_for_update(no_key=True).filter(**criteria)
        return bindings.extra(where=_references_locked()).first()  # fixed SQL (no input): the ORM has no FOR KEY SHARE
    db = rawsql.database()
    params = rawsql.db_values(db, WorkspaceBinding, criteria)
    found = rawsql.fetch_one(db, (WorkspaceBinding,), _lock_binding_sql(db.vendor, tuple(criteria)), params)
    return found[0] if found else None


@functools.cache
def _lock_binding_sql(vendor: str, criteria: tuple[str, ...]) -> str:
    table = rawsql.quote(WorkspaceBinding._meta.db_table)
    where = " AND ".join([rawsql.where(WorkspaceBinding, criteria), *_references_locked()])
    return f"SELECT {rawsql.columns(WorkspaceBinding)} FROM {table} WHERE {where}{rawsql.lock_clause()}"


@functools.cache
def _references_locked() -> tuple[str, ...]:
    """Conditions that hold while the binding's device, environment and project exist, and lock each of those
    rows FOR KEY SHARE (on PostgreSQL; nothing elsewhere)."""
    db = rawsql.database()
    if db.vendor != "postgresql":
        return ()
    table = rawsql.quote(WorkspaceBinding._meta.db_table)
    conditions = []
    for name in ("device", "environment", "project"):
        field = WorkspaceBinding._meta.get_field(name)
        target = field.related_model._meta
        column = f"{table}.{rawsql.quote(field.column)}"
        probe = (
            f"EXISTS (SELECT 1 FROM {rawsql.quote(target.db_table)} AS r"
            f" WHERE r.{rawsql.quote(target.pk.column)} = {column} FOR KEY SHARE)"
        )
        conditions.append(f"({column} IS NULL OR {probe})" if field.null else probe)
    return tuple(conditions)


_SUPERSEDE_UNLESS_SIGNED = """
WITH current AS (
    SELECT * FROM {table} WHERE {binding} = %s AND {direction} = %s AND {status} = %s
), superseded AS (
    UPDATE {table} AS s SET {status} = %s, {updated_at} = %s
    FROM current WHERE s.{id} = current.{id} AND s.{status} = %s AND current.{plan_signature} <> %s
)
SELECT {columns} FROM current
"""


def _supersede_unless_signed(
    *, binding_id, direction, plan_signature, now, single_statement=None
) -> SyncSession | None:
    """The prepared session of (binding, direction) as it was, superseded in passing unless it has this signature.

    Runs under the binding lock, in a statement that starts after the lock is held, so it sees every prepare
    committed before. On PostgreSQL, optimised, it is one statement (the prepare's query budget); otherwise two.
    """
    db = rawsql.database()
    if single_statement is None:
        single_statement = optimised() and db.vendor == "postgresql"
    if single_statement:
        # `s.status` is re-checked if a concurrent cancel held the row: a cancelled session stays cancelled.
        prepared, superseded = SyncSessionStatus.PREPARED, SyncSessionStatus.SUPERSEDED
        params = [binding_id, direction, prepared, superseded, now, prepared, plan_signature]
        found = rawsql.fetch_one(db, (SyncSession,), _supersede_unless_signed_sql(db.vendor), params)
        return found[0] if found else None
    prepared = SyncSession.objects.filter(
        workspace_binding_id=binding_id, direction=direction, status=SyncSessionStatus.PREPARED
    ).first()
    if prepared is not None and prepared.plan_signature != plan_signature:
        SyncSession.objects.filter(pk=prepared.pk, status=SyncSessionStatus.PREPARED).update(
            status=SyncSessionStatus.SUPERSEDED, updated_at=now
        )
    return prepared


@functools.cache
def _supersede_unless_signed_sql(vendor: str) -> str:
    names = ("id", "direction", "status", "updated_at", "plan_signature")
    return _SUPERSEDE_UNLESS_SIGNED.format(
        table=rawsql.quote(SyncSession._meta.db_table),
        columns=rawsql.columns(SyncSession),
        binding=rawsql.column(SyncSession, "workspace_binding"),
        **{name: rawsql.column(SyncSession, name) for name in names},
    )


@transaction.atomic
def sync_session_cancel(*, session: SyncSession) -> Outcome[SyncSession]:
    """Cancel a prepared session; `changed=False` when it was already cancelled (nothing changes).

    Raises `InvalidTransition` for a superseded session: it was replaced, there is nothing left to cancel.
    """
    locked = SyncSession.objects.select_for_update().get(pk=session.pk)
    _refresh(session, locked)
    if session.status == SyncSessionStatus.CANCELLED:
        return Outcome(session, changed=False)
    _check_transition(session, SyncSessionStatus.CANCELLED)
    session.status = SyncSessionStatus.CANCELLED
    session.save(update_fields=["status", "updated_at"])
    return Outcome(session, changed=True)


def pull_session_apply_preview(
    *, session: SyncSession, preview: dict, preview_signature: str, metadata=None
) -> Outcome[SyncSession]:
    """Attach the daemon's apply preview to a prepared pull session (a repeat of its signature is a no-op)."""
    return _apply(session=session, kind="preview", content=preview, signature=preview_signature, metadata=metadata)


def pull_session_apply_result(
    *, session: SyncSession, result: dict, result_signature: str, metadata=None
) -> Outcome[SyncSession]:
    """Attach the daemon's apply result to a prepared pull session (a repeat of its signature is a no-op)."""
    return _apply(session=session, kind="result", content=result, signature=result_signature, metadata=metadata)


@transaction.atomic
def _apply(*, session: SyncSession, kind: str, content: dict, signature: str, metadata) -> Outcome[SyncSession]:
    if session.direction != SyncDirection.PULL:
        raise ValueError("Only pull sessions have an apply preview and result.")
    locked = SyncSession.objects.select_for_update().get(pk=session.pk)
    _refresh(session, locked)
    if session.status != SyncSessionStatus.PREPARED:
        message = f"Only a prepared pull session takes an apply {kind}; this one is {session.status}."
        raise InvalidTransition(session, message)
    signature_field = f"{kind}_signature"
    if getattr(session, signature_field) == signature:
        if getattr(session, kind) != content:
            raise Conflict(session, f"This session's apply {kind} with this {kind}Signature differs.")
        return Outcome(session, changed=False)
    setattr(session, kind, content)
    setattr(session, signature_field, signature)
    fields = [kind, signature_field, "updated_at"]
    if metadata:
        session.metadata = {**session.metadata, **metadata}
        fields.append("metadata")
    session.save(update_fields=fields)
    return Outcome(session, changed=True)


def _check_transition(session: SyncSession, target: SyncSessionStatus) -> None:
    if target not in ALLOWED_TRANSITIONS[SyncSessionStatus(session.status)]:
        raise InvalidTransition(session, f"A {session.status} session cannot become {target}.")


def _refresh(session: SyncSession, locked: SyncSession) -> None:
    """Copy the locked row's current values onto the caller's instance."""
    for field in SyncSession._meta.concrete_fields:
        setattr(session, field.attname, getattr(locked, field.attname))


def _violates(exc: IntegrityError, constraint: str) -> bool:
    diag = getattr(exc.__cause__, "diag", None)
    if diag is not None:
        return diag.constraint_name == constraint
    # SQLite names the columns, not the constraint.
    return constraint in str(exc) or f"{SyncSession._meta.db_table}.workspace_binding_id, " in str(exc)
