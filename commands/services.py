"""Every write and state change of threads, local sessions and control commands.

Locking order, everywhere: the session row (`FOR NO KEY UPDATE`, so inserting its commands is not blocked),
then its command rows. Functions that take `session` accept a `LocalSession` or its id, and an optional
`sessions`: the sessions the caller may see, a queryset or a `SessionScope` (the API passes the caller's scope, so
an invisible session raises `acp.domain.NotFound` exactly like a missing one).

A control command's create and ack are the daemon loop's hot writes: optimised, they lock, insert and record with
written-out SQL (acp/serving/rawsql.py), as the prepare does; with ACP_SERVING=stock, through the ORM.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from django.db import connection, models, transaction
from django.db.models import Case, F, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from acp import realtime
from acp.domain import Conflict, InvalidInput, InvalidTransition, NotFound, Outcome
from acp.models import Environment
from acp.references import gone_references, lock_references
from acp.serving import optimised, rawsql
from commands.choices import (
    COMMAND_ALLOWED_TRANSITIONS,
    SESSION_START_STATES,
    SESSION_TERMINAL_STATES,
    THREAD_ALLOWED_TRANSITIONS,
    THREAD_TERMINAL_STATES,
    CommandStatus,
    CommandType,
    EventSource,
    EventType,
    SessionStatus,
)
from commands.models import ControlCommand, LocalSession, Thread, ThreadEvent
from commands.selectors import SessionScope

MAX_CLOCK_SKEW = timedelta(minutes=5)  # how far in the future a client's timestamp may be
_UNSET = object()


def command_notify_key(session_id) -> str:
    """The `acp.realtime` key a session's pollers wait on."""
    return f"commands:{session_id}"


# --- threads -----------------------------------------------------------------------------------------------------


@transaction.atomic
def thread_create(*, user, environment=None, project=None, title: str = "", metadata: dict | None = None) -> Thread:
    """Create a thread owned by `user`; `InvalidInput` if its environment or project was deleted meanwhile."""
    lock_references(environmentId=environment, projectId=project)
    return Thread.objects.create(
        user=user, environment=environment, project=project, title=title, metadata=metadata or {}
    )


# --- local sessions ----------------------------------------------------------------------------------------------


@transaction.atomic
def local_session_create(
    *,
    user,
    thread: Thread,
    device,
    workspace_binding=None,
    status: str = SessionStatus.CREATED,
    started_at=None,
    metadata: dict | None = None,
    record_event: bool = True,
) -> LocalSession:
    """Create a local session of `thread` on `device` (both `user`'s), `created` or `running`, and record
    `session.created` on the thread's timeline (unless `record_event=False`: the caller records
    `session_created_event(session)` with its own events, in one append).

    `environment` follows the binding, else the thread; a `running` session without `started_at` starts now.
    `started_at` may not be more than 5 minutes in the future (`InvalidInput`).
    """
    if status not in SESSION_START_STATES:
        raise ValueError(f"A local session starts created or running, not {status!r}.")
    check_client_timestamps({"startedAt": started_at}, timezone.now())
    if status == SessionStatus.RUNNING and started_at is None:
        started_at = timezone.now()
    environment_id = workspace_binding.environment_id if workspace_binding else thread.environment_id
    gone = gone_references(
        thread=thread,
        deviceId=device,
        workspaceBindingId=workspace_binding,
        environment=Environment(pk=environment_id) if environment_id else None,
    )
    if "thread" in gone:
        raise NotFound()
    if "environment" in gone:
        gone.remove("environment")
        environment_id = None  # deleted meanwhile: what its SET NULL would have made of the session
    if gone:
        raise InvalidInput({name: "The object was deleted." for name in gone})
    session = LocalSession.objects.create(
        user=user,
        thread=thread,
        device=device,
        workspace_binding=workspace_binding,
        environment_id=environment_id,
        status=status,
        started_at=started_at,
        metadata=metadata or {},
    )
    if record_event:
        record_events(thread.pk, session_created_event(session))
    return session


def session_created_event(session: LocalSession) -> NewEvent:
    return server_event(EventType.SESSION_CREATED, session=session, deviceId=session.device_id, status=session.status)


Sessions = QuerySet[LocalSession] | SessionScope | None  # the sessions a caller may see (None: all)


def _lock_session(session, sessions: Sessions) -> LocalSession:
    """The session, locked; `NotFound` when it does not exist or is not among `sessions`."""
    session_id = getattr(session, "pk", session)
    if optimised() and not isinstance(sessions, QuerySet):
        locked = rawsql.locked(LocalSession, {"id": session_id, **_criteria(sessions)})
    else:
        locked = _queryset(sessions).select_for_update(no_key=True).filter(pk=session_id).first()
    if locked is None:
        raise NotFound()
    return locked


def _queryset(sessions: Sessions) -> QuerySet[LocalSession]:
    if sessions is None:
        return LocalSession.objects.all()
    return sessions.sessions() if isinstance(sessions, SessionScope) else sessions


def _criteria(scope: SessionScope | None) -> dict[str, object]:
    return {} if scope is None else scope.criteria()


@transaction.atomic
def local_session_heartbeat(
    *, session, metadata=_UNSET, error=_UNSET, sessions: Sessions = None, now: datetime | None = None
) -> LocalSession:
    """Record that the session is alive: `lastHeartbeatAt` = now; a `created` session becomes `running`.

    `metadata` and `error`, when given, replace the stored values. An ended session raises `Conflict`.
    """
    now = now or timezone.now()
    session = _lock_session(session, sessions)
    if session.status in SESSION_TERMINAL_STATES:
        raise Conflict(session, f"The session has ended ({session.status}).")
    session.last_heartbeat_at = now
    fields = ["last_heartbeat_at", "updated_at"]
    if session.status == SessionStatus.CREATED:
        session.status = SessionStatus.RUNNING
        fields.append("status")
        if session.started_at is None:
            session.started_at = now
            fields.append("started_at")
    _replace_reported_fields(session, fields, metadata=metadata, error=error)
    session.save(update_fields=fields)
    return session


def _replace_reported_fields(session: LocalSession, fields: list[str], *, metadata, error) -> None:
    """Take the daemon's `metadata` and `error` where it sent them (None metadata is an empty one)."""
    if metadata is not _UNSET:
        session.metadata = metadata if metadata is not None else {}
        fields.append("metadata")
    if error is not _UNSET:
        session.error = error
        fields.append("error")


@transaction.atomic
def local_session_complete(
    *,
    session,
    status: str = SessionStatus.COMPLETED,
    completed_at: datetime | None = None,
    error=_UNSET,
    metadata=_UNSET,
    sessions: Sessions = None,
    now: datetime | None = None,
) -> Outcome:
    """End the session with terminal `status` (completed, failed, cancelled); its pending commands are cancelled.

    Ending it again with the same status changes nothing (`changed=False`); a different terminal status raises
    `InvalidTransition`. `completed_at` (default now) may not precede the session's start or be in the future.
    """
    if status not in SESSION_TERMINAL_STATES:
        raise ValueError(f"{status!r} is not a terminal session status.")
    now = now or timezone.now()
    check_client_timestamps({"completedAt": completed_at}, now)
    session = _lock_session(session, sessions)
    if session.status == status:
        return Outcome(session, False)
    if session.status in SESSION_TERMINAL_STATES:
        raise InvalidTransition(session, f"The session already ended {session.status}; it cannot become {status}.")
    completed_at = completed_at or now
    if completed_at < session.created_at:
        raise InvalidInput({"completedAt": "completedAt is before the session was created."})
    if session.started_at is not None and completed_at < session.started_at:
        raise InvalidInput({"completedAt": "completedAt is before the session started."})
    fields = _end_session(session, status=status, completed_at=completed_at, now=now)
    _replace_reported_fields(session, fields, metadata=metadata, error=error)
    session.save(update_fields=fields)
    return Outcome(session, True)


def _end_session(session: LocalSession, *, status: str, completed_at: datetime, now: datetime) -> list[str]:
    """Mark a locked session ended (the caller saves the returned fields), cancel its pending commands, and record
    both on the thread's timeline."""
    session.status = status
    session.completed_at = completed_at
    session.paused_at = None
    pending = ControlCommand.objects.filter(session=session, status=CommandStatus.PENDING)
    cancelled = list(pending.values_list("pk", "command_type"))  # the session's lock keeps this list exact
    if cancelled:
        pending.filter(pk__in=[pk for pk, _ in cancelled]).update(
            status=CommandStatus.CANCELLED, completed_at=now, updated_at=now
        )
    record_events(
        session.thread_id,
        *_commands_cancelled_events(session.pk, cancelled, reason="session_ended"),
        server_event(EventType.SESSION_ENDED, session=session, status=status),
    )
    return ["status", "completed_at", "paused_at", "updated_at"]


def _commands_cancelled_events(session_id, commands, *, reason: str) -> list[NewEvent]:
    return [
        server_event(
            EventType.COMMAND_PREFIX + CommandStatus.CANCELLED,
            session=session_id,
            commandId=pk,
            commandType=command_type,
            reason=reason,
        )
        for pk, command_type in commands
    ]


# --- control commands --------------------------------------------------------------------------------------------


def validate_command_payload(command_type: str, payload) -> dict:
    """The payload a command of `command_type` must carry; raises `InvalidInput`."""
    if command_type not in CommandType.values:
        raise InvalidInput({"commandType": f"{command_type!r} is not a command type."})
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise InvalidInput({"payload": "Must be a JSON object."})
    if command_type == CommandType.MESSAGE:
        text = payload.get("text")
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput({"payload": "A message needs payload.text, a non-empty string."})
    return payload


@transaction.atomic
def command_enqueue(
    *, session, command_type: str, payload: dict | None = None, sessions: Sessions = None
) -> ControlCommand:
    """Queue a `pending` command for the session's daemon and wake its poll and its machine's channel (on commit).

    Raises `Conflict` when the session has ended, or for `pause` on a paused session / `resume` on one that is
    not paused; `InvalidInput` for a `message` without `payload.text`.
    """
    payload = validate_command_payload(command_type, payload)
    session = _lock_session(session, sessions)
    if session.status in SESSION_TERMINAL_STATES:
        raise Conflict(session, f"The session has ended ({session.status}).")
    if command_type == CommandType.PAUSE and session.paused_at is not None:
        raise Conflict(session, "The session is already paused.")
    if command_type == CommandType.RESUME and session.paused_at is None:
        raise Conflict(session, "The session is not paused.")
    command = ControlCommand(
        user_id=session.user_id,
        session=session,
        thread_id=session.thread_id,
        command_type=command_type,
        payload=payload,
    )
    if optimised():
        rawsql.insert(command)
    else:
        command.save(force_insert=True)
    record_events(
        session.thread_id,
        server_event(
            EventType.COMMAND_QUEUED, session=session, commandId=command.pk, commandType=command_type, payload=payload
        ),
        notify=(command_notify_key(session.pk), realtime.machine_key(session.device_id)),  # its poll, its channel
    )
    return command


def check_client_timestamps(timestamps: dict[str, datetime | None], now: datetime) -> None:
    """The one rule for a client's clock: none of `timestamps` more than 5 minutes ahead of ours (`InvalidInput`)."""
    for field, value in timestamps.items():
        if value is not None and value > now + MAX_CLOCK_SKEW:
            raise InvalidInput({field: f"{field} is more than 5 minutes in the future."})


@transaction.atomic
def command_ack(
    *,
    session,
    command_id,
    status: str | None = None,
    acknowledged_at: datetime | None = None,
    completed_at: datetime | None = None,
    result=_UNSET,
    sessions: Sessions = None,
    now: datetime | None = None,
) -> Outcome:
    """Move a command of `session` along `pending → acknowledged → completed`, `pending → completed`,
    `pending | acknowledged → cancelled` (`status` defaults to acknowledged).

    Repeating the current status changes nothing (`changed=False`); any other move raises `InvalidTransition`.
    Timestamps default to now; out of order, before the command's creation or more than 5 minutes ahead →
    `InvalidInput`. `result` (the ack's payload) is stored as the command's result; its `payload` is kept.
    Completing `pause` sets the session's `pausedAt`, `resume` clears it, `cancel` ends the session cancelled.
    A missing command, or one of another session, raises `NotFound`.
    """
    target = status or CommandStatus.ACKNOWLEDGED
    if target not in CommandStatus.values or target == CommandStatus.PENDING:
        raise ValueError(f"An ack cannot move a command to {target!r}.")
    now = now or timezone.now()
    check_client_timestamps({"acknowledgedAt": acknowledged_at, "completedAt": completed_at}, now)
    if acknowledged_at and completed_at and completed_at < acknowledged_at:
        raise InvalidInput({"completedAt": "completedAt is before acknowledgedAt."})

    command = _lock_command(session, command_id, sessions)
    if command.status == target:
        return Outcome(command, False)
    if target not in COMMAND_ALLOWED_TRANSITIONS[command.status]:
        raise InvalidTransition(command, f"A {command.status} command cannot become {target}.")

    ack_at, done_at = _ack_times(command, target, acknowledged_at, completed_at, now)
    for field, value in (("completedAt", done_at), ("acknowledgedAt", ack_at)):
        if value is not None and value < command.created_at:
            raise InvalidInput({field: f"{field} is before the command was created."})
    if ack_at is not None and done_at is not None and done_at < ack_at:
        raise InvalidInput({"completedAt": "completedAt is before acknowledgedAt."})

    command.status = target
    command.acknowledged_at = ack_at
    command.completed_at = done_at
    fields = ["status", "acknowledged_at", "completed_at"]
    if result is not _UNSET:
        command.result = result
        fields.append("result")
    command.updated_at = now
    events = [_command_moved_event(command)]
    if target == CommandStatus.COMPLETED and command.command_type == CommandType.CANCEL:
        events += _complete_cancel(command, fields, now)
    else:
        _save_command(command, fields)
        if target == CommandStatus.COMPLETED:
            events += _apply_completed_pause_or_resume(command, now)
    record_events(command.thread_id, *events)
    return Outcome(command, True)


def _save_command(command: ControlCommand, fields: list[str]) -> None:
    """Write the locked command's `fields` and its `updated_at`."""
    if optimised():
        rawsql.update(command, (*fields, "updated_at"))
    else:
        ControlCommand.objects.filter(pk=command.pk).update(
            updated_at=command.updated_at, **{f: getattr(command, f) for f in fields}
        )


def _command_moved_event(command: ControlCommand) -> NewEvent:
    data = {"commandId": command.pk, "commandType": command.command_type}
    if command.result is not None:
        data["result"] = command.result
    return server_event(EventType.COMMAND_PREFIX + command.status, session=command.session_id, **data)


def _lock_command(session, command_id, sessions: Sessions) -> ControlCommand:
    """Lock the session, then the command, in one statement: the subquery runs (and locks) first.

    Every writer of a command holds its session's lock, so this order can never deadlock with them.
    """
    session_id = getattr(session, "pk", session)
    if optimised() and not isinstance(sessions, QuerySet):
        command = _lock_command_written_out(session_id, command_id, _criteria(sessions))
    else:
        locked_session = _queryset(sessions).filter(pk=session_id).select_for_update(no_key=True).values("pk")[:1]
        command = (
            ControlCommand.objects.select_for_update(no_key=True)
            .filter(pk=command_id, session_id=Subquery(locked_session))
            .first()
        )
    if command is None:
        raise NotFound()
    return command


def _lock_command_written_out(session_id, command_id, criteria: dict[str, object]) -> ControlCommand | None:
    db = rawsql.database()
    session_criteria = {"id": session_id, **criteria}
    params = [rawsql.db_value(db, ControlCommand, "id", command_id)]
    params += rawsql.db_values(db, LocalSession, session_criteria)
    found = rawsql.fetch_one(db, (ControlCommand,), _lock_command_sql(tuple(session_criteria), db.vendor), params)
    return found[0] if found else None


@functools.cache
def _lock_command_sql(session_criteria: tuple[str, ...], vendor: str) -> str:
    sessions = rawsql.quote(LocalSession._meta.db_table)
    locked_session = (
        f"SELECT {rawsql.column(LocalSession, 'id')} FROM {sessions}"
        f" WHERE {rawsql.where(LocalSession, session_criteria)}{rawsql.lock_clause()}"
    )
    return (
        f"SELECT {rawsql.columns(ControlCommand)} FROM {rawsql.quote(ControlCommand._meta.db_table)}"
        f" WHERE {rawsql.column(ControlCommand, 'id')} = %s"
        f" AND {rawsql.column(ControlCommand, 'session')} = ({locked_session}){rawsql.lock_clause()}"
    )


def _ack_times(command, target, acknowledged_at, completed_at, now):
    """The command's (acknowledgedAt, completedAt) after moving to `target`, defaults filled in."""
    ack_at = command.acknowledged_at
    if target == CommandStatus.ACKNOWLEDGED:
        return acknowledged_at or now, None
    if target == CommandStatus.COMPLETED:
        ack_at = ack_at or acknowledged_at
        done_at = completed_at or max(now, ack_at or now)
        return ack_at or done_at, done_at
    # cancelled: acknowledgedAt stays what it was (or what the daemon reports); the end time is recorded.
    ack_at = ack_at or acknowledged_at
    return ack_at, completed_at or max(now, ack_at or now)


def _apply_completed_pause_or_resume(command: ControlCommand, now: datetime) -> list[NewEvent]:
    """A completed pause pauses a live session (if not yet paused); a completed resume un-pauses it.

    Returns the session's event when it changed."""
    sessions = LocalSession.objects.filter(pk=command.session_id)
    changed, event_type = 0, None
    if command.command_type == CommandType.PAUSE:
        changed = (
            sessions.filter(paused_at__isnull=True)
            .exclude(status__in=SESSION_TERMINAL_STATES)
            .update(paused_at=command.completed_at, updated_at=now)
        )
        event_type = EventType.SESSION_PAUSED
    elif command.command_type == CommandType.RESUME:
        changed = sessions.filter(paused_at__isnull=False).update(paused_at=None, updated_at=now)
        event_type = EventType.SESSION_RESUMED
    return [server_event(event_type, session=command.session_id, commandId=command.pk)] if changed else []


def _complete_cancel(command: ControlCommand, fields: list[str], now: datetime) -> list[NewEvent]:
    """Store the completed cancel and end its (live) session cancelled, with the session's pending commands.

    The command and the pending ones are written by one statement (an ended session has no pending commands,
    so cancelling them is right whether or not the session was still live). Returns the events it caused.
    """
    pending = list(
        ControlCommand.objects.filter(session_id=command.session_id, status=CommandStatus.PENDING)
        .exclude(pk=command.pk)
        .values_list("pk", "command_type")
    )
    this = models.Q(pk=command.pk)
    pending_defaults = {
        "status": Value(CommandStatus.CANCELLED),
        "acknowledged_at": F("acknowledged_at"),
        "completed_at": Value(now),
        "result": F("result"),
    }
    ControlCommand.objects.filter(this | models.Q(session_id=command.session_id, status=CommandStatus.PENDING)).update(
        updated_at=now,
        **{
            field: Case(
                When(this, then=Value(getattr(command, field), output_field=ControlCommand._meta.get_field(field))),
                default=pending_defaults[field],
                output_field=ControlCommand._meta.get_field(field),
            )
            for field in fields
        },
    )
    # Not before the session started; a session that never started ends when the cancel completed.
    completed_at = Value(command.completed_at)
    ended = (
        LocalSession.objects.filter(pk=command.session_id)
        .exclude(status__in=SESSION_TERMINAL_STATES)
        .update(
            status=SessionStatus.CANCELLED,
            completed_at=Greatest(Coalesce(F("started_at"), completed_at), completed_at),
            paused_at=None,
            updated_at=now,
        )
    )
    events = _commands_cancelled_events(command.session_id, pending, reason="session_cancelled")
    if ended:
        events.append(
            server_event(
                EventType.SESSION_ENDED,
                session=command.session_id,
                status=SessionStatus.CANCELLED,
                commandId=command.pk,
            )
        )
    return events


@transaction.atomic
def command_cancel(*, command: ControlCommand, now: datetime | None = None) -> Outcome[ControlCommand]:
    """Cancel a pending command (support's repair); `changed=False`, nothing written, when it is not pending."""
    now = now or timezone.now()
    _lock_session(command.session_id, None)
    updated = ControlCommand.objects.filter(pk=command.pk, status=CommandStatus.PENDING).update(
        status=CommandStatus.CANCELLED, completed_at=now, updated_at=now
    )
    if updated:
        record_events(
            command.thread_id,
            *_commands_cancelled_events(command.session_id, [(command.pk, command.command_type)], reason="support"),
        )
    return Outcome(command, changed=bool(updated))


T = TypeVar("T")
SESSION_BATCH = 500


def _each_locked_batch(sessions: QuerySet, session_ids: list, work: Callable[[list], T]) -> list[T]:
    """`work(ids)` for each batch of `session_ids`, in a transaction of its own, with those of them still in
    `sessions` locked first, in id order, as every other writer locks sessions (so no deadlock is possible).
    Returns what each batch's `work` returned."""
    results = []
    for start in range(0, len(session_ids), SESSION_BATCH):
        with transaction.atomic():
            locked = list(
                sessions.select_for_update(no_key=True)
                .filter(pk__in=session_ids[start : start + SESSION_BATCH])
                .order_by("pk")
                .values_list("pk", flat=True)
            )
            results.append(work(locked))
    return results


@dataclass(frozen=True)
class ExpireSummary:
    cutoff: datetime
    commands: int
    sessions: int


def commands_expire(*, older_than: timedelta, now: datetime | None = None, dry_run: bool = False) -> ExpireSummary:
    """Cancel every command still pending `older_than` after its creation; per batch of sessions, one transaction.

    Returns how many commands (of how many sessions) were cancelled, or would be with `dry_run`.
    """
    now = now or timezone.now()
    cutoff = now - older_than
    stale = ControlCommand.objects.filter(status=CommandStatus.PENDING, created_at__lt=cutoff)
    if dry_run:
        return ExpireSummary(cutoff, stale.count(), stale.values("session_id").distinct().count())
    session_ids = sorted(set(stale.values_list("session_id", flat=True)))

    def cancel(locked: list) -> int:
        expired = list(stale.filter(session_id__in=locked).values_list("pk", "command_type", "session_id", "thread_id"))
        cancelled = ControlCommand.objects.filter(pk__in=[row[0] for row in expired]).update(
            status=CommandStatus.CANCELLED, completed_at=now, updated_at=now
        )
        _record_cancelled_by_thread(expired, reason="expired")
        return cancelled

    total = sum(_each_locked_batch(LocalSession.objects.all(), session_ids, cancel))
    return ExpireSummary(cutoff, total, len(session_ids))


def _record_cancelled_by_thread(rows, *, reason: str, ended_sessions=(), session_status=None, error=None) -> None:
    """The events of a bulk job's batch: `rows` of (command id, type, session id, thread id) cancelled, and
    `ended_sessions` of (session id, thread id) ended `session_status`. Threads in id order (no deadlock between two
    jobs; every other writer locks one thread, after its sessions)."""
    by_thread: dict = {}
    for pk, command_type, session_id, thread_id in rows:
        by_thread.setdefault(thread_id, []).extend(
            _commands_cancelled_events(session_id, [(pk, command_type)], reason=reason)
        )
    for session_id, thread_id in ended_sessions:
        by_thread.setdefault(thread_id, []).append(
            server_event(EventType.SESSION_ENDED, session=session_id, status=session_status, error=error)
        )
    for thread_id in sorted(by_thread):
        record_events(thread_id, *by_thread[thread_id])


@dataclass(frozen=True)
class ReapSummary:
    cutoff: datetime
    sessions: int  # lost sessions ended `failed` (or that would be, with dry_run)
    commands: int  # their pending and acknowledged commands cancelled


DAEMON_LOST = "daemon_lost"
_LIVE_SESSION_STATES = (SessionStatus.CREATED, SessionStatus.RUNNING)


def local_sessions_lost(*, cutoff: datetime) -> QuerySet[LocalSession]:
    """Live (created or running) sessions whose last sign of life (`last_heartbeat_at`, else `started_at`, else
    `created_at`) is before `cutoff`."""
    return LocalSession.objects.alias(last_activity=Coalesce("last_heartbeat_at", "started_at", "created_at")).filter(
        status__in=_LIVE_SESSION_STATES, last_activity__lt=cutoff
    )


def local_sessions_reap_lost(
    *, lost_after: timedelta, now: datetime | None = None, dry_run: bool = False
) -> ReapSummary:
    """End `failed` (error `daemon_lost`) every live session whose daemon went silent `lost_after` ago; their
    pending and acknowledged commands are cancelled (an ended session's command can never complete).

    Per batch of sessions, one transaction: sessions locked in id order, as every other writer does, and the
    condition re-checked under the lock (a heartbeat that came meanwhile keeps its session alive).
    """
    now = now or timezone.now()
    cutoff = now - lost_after
    lost = local_sessions_lost(cutoff=cutoff)
    open_commands = ControlCommand.objects.filter(status__in=(CommandStatus.PENDING, CommandStatus.ACKNOWLEDGED))
    if dry_run:
        return ReapSummary(cutoff, lost.count(), open_commands.filter(session__in=lost.values("pk")).count())
    session_ids = list(lost.order_by("pk").values_list("pk", flat=True))

    def reap(locked: list) -> tuple[int, int]:
        cancelled = list(
            open_commands.filter(session_id__in=locked).values_list("pk", "command_type", "session_id", "thread_id")
        )
        commands = ControlCommand.objects.filter(pk__in=[row[0] for row in cancelled]).update(
            status=CommandStatus.CANCELLED,
            # never before its acknowledgement (a constraint), which a skewed daemon clock may put after now
            completed_at=Greatest(Value(now), Coalesce("acknowledged_at", Value(now))),
            updated_at=now,
        )
        ended = list(LocalSession.objects.filter(pk__in=locked).values_list("pk", "thread_id"))
        sessions = LocalSession.objects.filter(pk__in=locked).update(
            status=SessionStatus.FAILED, error=DAEMON_LOST, completed_at=now, paused_at=None, updated_at=now
        )
        _record_cancelled_by_thread(
            cancelled, reason=DAEMON_LOST, ended_sessions=ended, session_status=SessionStatus.FAILED, error=DAEMON_LOST
        )
        return sessions, commands

    counts = _each_locked_batch(lost, session_ids, reap)
    sessions, commands = sum(s for s, _ in counts), sum(c for _, c in counts)
    return ReapSummary(cutoff, sessions, commands)


# --- threads: update and delete ----------------------------------------------------------------------------------


def _live_sessions(thread: Thread) -> QuerySet[LocalSession]:
    return LocalSession.objects.filter(thread=thread).exclude(status__in=SESSION_TERMINAL_STATES)


@transaction.atomic
def thread_update(*, thread: Thread, status: str | None = None, **fields) -> Outcome:
    """Change a thread's `title`, `metadata`, `project` and, along `THREAD_ALLOWED_TRANSITIONS`, its `status`.

    An illegal move raises `acp.domain.InvalidTransition`; ending a thread that has a live (created or running)
    local session raises `acp.domain.Conflict`. Values equal to the stored ones write nothing (`changed=False`).
    """
    if "project" in fields:
        lock_references(projectId=fields["project"])  # before the thread: the order a delete of it takes
    thread = Thread.objects.select_for_update().get(pk=thread.pk)
    if status is not None and status != thread.status:
        if status not in THREAD_ALLOWED_TRANSITIONS[thread.status]:
            raise InvalidTransition(thread, f"A {thread.status} thread cannot become {status}.")
        if status in THREAD_TERMINAL_STATES and _live_sessions(thread).exists():
            raise Conflict(thread, f"The thread has a live local session: end it before the thread is {status}.")
        fields["status"] = status
    changed = [name for name, value in fields.items() if getattr(thread, name) != value]
    if not changed:
        return Outcome(thread, False)
    for name in changed:
        setattr(thread, name, fields[name])
    thread.save(update_fields=[*changed, "updated_at"])
    return Outcome(thread, True)


@transaction.atomic
def thread_delete(*, thread: Thread) -> None:
    """Delete a thread with its local sessions and their commands. A thread with a live (created or running)
    session raises `acp.domain.Conflict`: its daemon is still working for it."""
    thread = Thread.objects.select_for_update().get(pk=thread.pk)
    if _live_sessions(thread).exists():
        raise Conflict(thread, "The thread has a live local session: end it before deleting the thread.")
    thread.delete()


# --- thread events (the timeline) ------------------------------------------------------------------------------


def thread_events_key(thread_id) -> str:
    """The `acp.realtime` key a thread's event streams wait on."""
    return f"thread-events:{thread_id}"


@dataclass(frozen=True)
class NewEvent:
    type: str
    data: dict = dataclasses.field(default_factory=dict)
    source: str = EventSource.SERVER
    session_id: object = None
    client_event_id: str | None = None
    occurred_at: datetime | None = None


@transaction.atomic(savepoint=False)
def thread_events_append(*, thread_id, events: Sequence[NewEvent], now: datetime | None = None) -> list[ThreadEvent]:
    """Append `events` to the thread's timeline, in order, in the caller's transaction; its streams wake when that
    commits. Returns the stored events.

    Sequences are gapless and strictly increasing per thread whatever runs concurrently: they are allocated from the
    thread row, which stays locked until the transaction ends. An event whose `client_event_id` the thread already
    has is not stored again (nor returned). Without client event ids this costs two statements. `NotFound` when the
    thread does not exist.
    """
    if not events:
        return []
    now = now or timezone.now()
    if any(event.client_event_id is not None for event in events):
        # Locked before reading which ids it has, so a concurrent batch with the same ids waits and then sees them.
        if not list(Thread.objects.select_for_update(no_key=True).filter(pk=thread_id).values_list("pk", flat=True)):
            raise NotFound()
        known = set(
            ThreadEvent.objects.filter(
                thread_id=thread_id, client_event_id__in=[e.client_event_id for e in events if e.client_event_id]
            ).values_list("client_event_id", flat=True)
        )
        events = [event for event in events if event.client_event_id is None or event.client_event_id not in known]
        if not events:
            return []
    last = _allocate_sequences(thread_id, len(events))
    first = last - len(events) + 1
    return ThreadEvent.objects.bulk_create(
        ThreadEvent(
            thread_id=thread_id,
            session_id=event.session_id,
            sequence=first + index,
            type=event.type,
            source=event.source,
            data=event.data,
            client_event_id=event.client_event_id,
            occurred_at=event.occurred_at,
            created_at=now,
        )
        for index, event in enumerate(events)
    )


def _allocate_sequences(thread_id, count: int) -> int:
    """Reserve `count` sequences of the thread (its row stays locked until commit); the last one reserved.

    The streams' NOTIFY rides on the same statement (one round trip fewer on every state change that records an
    event); PostgreSQL delivers it on commit, as `acp.realtime.notify` would.
    """
    on_postgresql = connection.vendor == "postgresql"
    params = [count, Thread._meta.pk.get_db_prep_value(thread_id, connection)]
    if on_postgresql:
        params += [realtime.CHANNEL, thread_events_key(thread_id)]
    with connection.cursor() as cursor:
        cursor.execute(_allocate_sql(notify_count=int(on_postgresql)), params)
        row = cursor.fetchone()
    if row is None:
        raise NotFound()
    return row[0]


ONE_STATEMENT_EVENTS = 8  # a statement per count is built and kept: the bulk jobs' batches go the longer way


def record_events(thread_id, *events: NewEvent, notify: Sequence[str] = ()) -> None:
    """Record the server's own events on the thread's timeline, in the caller's transaction, and wake the waiters
    of the keys in `notify` (as `acp.realtime.notify`) when it commits.

    Optimised, on PostgreSQL, a few events (a state change's) take one statement (`_record_in_one_statement`);
    otherwise two or three.
    """
    if 0 < len(events) <= ONE_STATEMENT_EVENTS and optimised() and connection.vendor == "postgresql":
        _record_in_one_statement(thread_id, events, notify)
    else:
        thread_events_append(thread_id=thread_id, events=events)
        realtime.notify(*notify)


def _record_in_one_statement(thread_id, events: Sequence[NewEvent], notify: Sequence[str]) -> None:
    """`thread_events_append` of server events (no client event ids) and the NOTIFY of `notify`, in one round
    trip: the thread's sequences are allocated, with every NOTIFY, by the statement that inserts the events."""
    db = rawsql.database()
    now = timezone.now()
    params = [len(events), rawsql.db_value(db, Thread, "id", thread_id)]
    params += [value for key in (thread_events_key(thread_id), *notify) for value in (realtime.CHANNEL, key)]
    for event in events:
        row = ThreadEvent(
            thread_id=thread_id,
            session_id=event.session_id,
            sequence=0,  # not written: the statement computes it
            type=event.type,
            source=event.source,
            data=event.data,
            occurred_at=event.occurred_at,
            created_at=now,
        )
        values = zip(rawsql.fields(ThreadEvent), rawsql.saved_values(db, row), strict=True)
        params += [value for field, value in values if field.name != "sequence"]
    with db.cursor() as cursor:
        cursor.execute(_record_sql(len(events), len(notify)), params)
        if cursor.rowcount == 0:  # no such thread: nothing allocated, nothing inserted
            raise NotFound()


@functools.cache
def _record_sql(count: int, notify_count: int) -> str:
    """`_allocate_sql` feeding the INSERT of `count` events, the last one getting the new last sequence. Each value
    is cast: a SELECT's parameters have no column type."""
    db = rawsql.database()
    last = rawsql.column(Thread, "last_event_sequence")
    values = [
        None if field.name == "sequence" else f"CAST(%s AS {field.cast_db_type(db)})"
        for field in rawsql.fields(ThreadEvent)
    ]
    rows = " UNION ALL ".join(
        "SELECT "
        + ", ".join(value or f"allocated.{last} - {count - 1 - index}" for value in values)
        + " FROM allocated"
        for index in range(count)
    )
    return (
        f"WITH allocated AS ({_allocate_sql(notify_count=1 + notify_count)})"
        f" INSERT INTO {rawsql.quote(ThreadEvent._meta.db_table)} ({rawsql.columns(ThreadEvent)}) {rows}"
    )


@functools.cache
def _allocate_sql(*, notify_count: int) -> str:
    """The thread's UPDATE that adds the first parameter to its last sequence and returns the new one, with
    `notify_count` NOTIFYs (each a channel and a key; PostgreSQL sends them when the transaction commits)."""
    last = rawsql.column(Thread, "last_event_sequence")
    notifies = ", pg_notify(%s, %s)" * notify_count
    return (
        f"UPDATE {rawsql.quote(Thread._meta.db_table)} SET {last} = {last} + %s"
        f" WHERE {rawsql.column(Thread, 'id')} = %s RETURNING {last}{notifies}"
    )


def server_event(type_: str, *, session=None, **data) -> NewEvent:
    """One of the server's own events; `data` names the ids involved (as strings)."""
    session_id = getattr(session, "pk", session)
    if session_id is not None:
        data.setdefault("sessionId", str(session_id))
    data = {key: str(value) if isinstance(value, uuid.UUID) else value for key, value in data.items()}
    return NewEvent(type=type_, data=data, session_id=session_id)


@dataclass(frozen=True)
class IngestResult:
    processed: int
    persisted: list[ThreadEvent]


@transaction.atomic
def thread_events_ingest(
    *, thread_id, events: Sequence[NewEvent], sessions: QuerySet[LocalSession], now: datetime | None = None
) -> IngestResult:
    """Store a batch sent by a daemon or a user, all or nothing: every `session_id` must be among `sessions` (the
    thread's sessions the caller may see), client event ids unique within the batch, no `occurred_at` in the future
    (`InvalidInput` naming `events[i].<field>`). Events already stored under their client event id are skipped."""
    now = now or timezone.now()
    seen: set[str] = set()
    for index, event in enumerate(events):
        check_client_timestamps({f"events[{index}].occurredAt": event.occurred_at}, now)
        if event.client_event_id is not None:
            if event.client_event_id in seen:
                raise InvalidInput({f"events[{index}].clientEventId": "Appears twice in the batch."})
            seen.add(event.client_event_id)
    session_ids = {event.session_id for event in events if event.session_id is not None}
    if session_ids:
        known = set(sessions.filter(pk__in=session_ids).values_list("pk", flat=True))
        for index, event in enumerate(events):
            if event.session_id is not None and event.session_id not in known:
                raise InvalidInput({f"events[{index}].sessionId": "No such session in this thread."})
    persisted = thread_events_append(thread_id=thread_id, events=events, now=now)
    return IngestResult(len(events), persisted)
