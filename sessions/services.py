"""Every write and state change of workspaces and launches.

The launch handshake: `launch_create` records a launch `pending` and wakes the machine's daemon
(NOTIFY `acp.realtime.machine_key`); the daemon answers with `launch_acknowledge` (NOTIFY
`launch:<launch_id>`), which on "ok" creates the session's thread (or reuses the caller's) and local
session in the same transaction; the waiting request reads the result, or, at its deadline, calls
`launch_time_out`. Every move is a conditional write on the launch row, so whichever of the
acknowledgement and the timeout comes first wins, in any server process.
"""

import dataclasses
import functools
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from acp import realtime
from acp.domain import Conflict, InvalidInput, NotFound, Outcome
from acp.models import Device
from acp.references import gone_references, lock_model_fields, lock_row
from acp.services import token_use_statement
from acp.serving import rawsql
from commands.choices import EventType, SessionStatus
from commands.models import Thread
from commands.services import (
    local_session_create,
    record_events,
    server_event,
    session_created_event,
    thread_create,
)
from sessions.choices import AckStatus, LaunchErrorCode, LaunchStatus
from sessions.models import Launch, Workspace
from sessions.selectors import ChannelState, pending_work_params, pending_work_sql

_WORKSPACE_REFERENCES = {"project": "project_id", "default_machine": "default_machine_id"}


@transaction.atomic
def workspace_create(*, user, **fields) -> Workspace:
    """Create a workspace; `InvalidInput` naming the field if its project or default machine was deleted."""
    lock_model_fields(fields, _WORKSPACE_REFERENCES)
    return Workspace.objects.create(user=user, **fields)


@transaction.atomic
def workspace_update(*, workspace: Workspace, **fields) -> Workspace:
    """Change a workspace; `InvalidInput` for a reference deleted meanwhile, `NotFound` if the workspace was."""
    lock_model_fields(fields, _WORKSPACE_REFERENCES)
    lock_row(workspace)
    for name, value in fields.items():
        setattr(workspace, name, value)
    workspace.save(update_fields=[*fields, "updated_at"])
    return workspace


def launch_key(launch_id) -> str:
    return f"launch:{launch_id}"


@transaction.atomic
def launch_create(
    *,
    user,
    workspace: Workspace,
    machine,
    user_session=None,
    metadata: dict | None = None,
    initial_prompt: str | None = None,
    worktree_name: str | None = None,
    session_settings: dict | None = None,
    resume_session_id: str | None = None,
    agent_session_id: str | None = None,
    now=None,
) -> Launch:
    """Record a launch. An online machine's launch is `pending` and its daemon is woken when this commits;
    an offline machine's launch is recorded `failed` (`machine_offline`) and offered to nobody."""
    now = now or timezone.now()
    gone = gone_references(workspace=workspace, machine_id=machine, user_session_id=user_session)
    if "workspace" in gone:
        raise NotFound()
    if gone:
        raise InvalidInput({name: "The object was deleted." for name in gone})
    online = machine.is_online(now)
    launch = Launch.objects.create(
        user=user,
        workspace=workspace,
        machine=machine,
        user_session=user_session,
        metadata=metadata or {},
        initial_prompt=initial_prompt,
        worktree_name=worktree_name,
        session_settings=session_settings,
        resume_session_id=resume_session_id,
        agent_session_id=agent_session_id,
        status=LaunchStatus.PENDING if online else LaunchStatus.FAILED,
        error_code="" if online else LaunchErrorCode.MACHINE_OFFLINE,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.ACP_LAUNCH_ACK_TIMEOUT),
    )
    if online:
        realtime.notify(realtime.machine_key(machine.pk))
    if user_session is not None:  # a new thread is created only if the daemon accepts: the events wait till then
        outcome = [] if online else [EventType.LAUNCH_FAILED]
        record_events(user_session.pk, *_launch_events(launch, EventType.LAUNCH_REQUESTED, *outcome))
    return launch


def _launch_events(launch: Launch, *types: str, session=None):
    """The launch's events, with its ids (and, once decided, its error code) in `data`."""
    data = {"launchId": launch.pk, "workspaceId": launch.workspace_id, "machineId": launch.machine_id}
    if launch.error_code:
        data["errorCode"] = launch.error_code
    return [server_event(event_type, session=session, **data) for event_type in types]


def launch_acknowledge(*, launch: Launch, status: str, payload: dict | None = None, now=None) -> Outcome[Launch]:
    """Record the daemon's answer to a pending launch.

    "ok" → `acknowledged`, with a new thread (or the caller's `user_session`) and a `running` local session
    created in the same transaction; "error" → `failed`. The same answer again changes nothing (`changed=False`);
    any other answer to a launch that is no longer pending, or one after `expires_at`, raises `Conflict` and
    changes nothing.
    """
    payload = payload if payload is not None else {}
    now = now or timezone.now()
    with transaction.atomic():
        # The machine and the caller's thread before the launch (the order a delete of either takes them in): the
        # thread and local session made below refer to them. A thread deleted meanwhile was unset on the launch.
        user_session = Thread(pk=launch.user_session_id) if launch.user_session_id else None
        if "machine" in gone_references(machine=Device(pk=launch.machine_id), user_session=user_session):
            raise NotFound()  # the launch went with its machine
        launch = (
            Launch.objects.select_for_update(of=("self",))
            .select_related("user", "workspace", "machine", "user_session")
            .get(pk=launch.pk)
        )
        if launch.status != LaunchStatus.PENDING:
            if launch.ack_status == status and launch.ack_payload == payload:
                return Outcome(launch, changed=False)
            if launch.status == LaunchStatus.TIMED_OUT:
                raise Conflict(launch, "The launch timed out before it was acknowledged.")
            raise Conflict(launch, f"The launch is already {launch.status}.")
        if now >= launch.expires_at:
            # Its waiter has given up (or is about to): too late, whether or not it has said so yet.
            raise Conflict(launch, "The launch timed out before it was acknowledged.")

        launch.ack_status = status
        launch.ack_payload = payload
        launch.acknowledged_at = now
        if status == AckStatus.OK:
            launch.status = LaunchStatus.ACKNOWLEDGED
            launch.thread = launch.user_session or thread_create(
                user=launch.user, title=_thread_title(launch), metadata={"launch_id": str(launch.pk)}
            )
            launch.local_session = local_session_create(
                user=launch.user,
                thread=launch.thread,
                device=launch.machine,
                status=SessionStatus.RUNNING,
                started_at=now,
                metadata={"launch_id": str(launch.pk), "workspace_id": str(launch.workspace_id)},
                record_event=False,  # recorded below with the launch's events, in one append
            )
        else:
            launch.status = LaunchStatus.FAILED
            launch.error_code = _daemon_error_code(payload)
        _record_launch_outcome(launch)
        launch.save(
            update_fields=[
                "status",
                "error_code",
                "ack_status",
                "ack_payload",
                "acknowledged_at",
                "thread",
                "local_session",
                "updated_at",
            ]
        )
        realtime.notify(launch_key(launch.pk))
    return Outcome(launch, changed=True)


def _record_launch_outcome(launch: Launch) -> None:
    """The daemon's answer on the thread's timeline, in one append: a new thread starts with the request that made
    it, then the session's creation and the acknowledgement. A launch that failed before any thread existed has
    no timeline: it stays in the launch's own record."""
    thread_id = launch.thread_id or launch.user_session_id
    if thread_id is None:
        return
    if launch.status != LaunchStatus.ACKNOWLEDGED:
        record_events(thread_id, *_launch_events(launch, EventType.LAUNCH_FAILED))
        return
    events = []
    if launch.user_session_id is None:
        (requested,) = _launch_events(launch, EventType.LAUNCH_REQUESTED)
        events.append(dataclasses.replace(requested, occurred_at=launch.created_at))
    (acknowledged,) = _launch_events(launch, EventType.LAUNCH_ACKNOWLEDGED, session=launch.local_session_id)
    record_events(thread_id, *events, session_created_event(launch.local_session), acknowledged)


@transaction.atomic
def launch_time_out(*, launch_id, now=None) -> Outcome[Launch | None]:
    """Move a `pending` launch to `timed_out`; `changed=False` (nothing changes) when it is no longer pending.

    One conditional UPDATE, so it never overwrites an acknowledgement that got in first; `obj` is the launch as it
    then stands (None if it vanished). A caller's thread records `launch.timed_out`.
    """
    now = now or timezone.now()
    updated = Launch.objects.filter(pk=launch_id, status=LaunchStatus.PENDING).update(
        status=LaunchStatus.TIMED_OUT, error_code=LaunchErrorCode.DAEMON_TIMEOUT, timed_out_at=now, updated_at=now
    )
    launch = Launch.objects.filter(pk=launch_id).first()
    if updated and launch.user_session_id is not None:
        record_events(launch.user_session_id, *_launch_events(launch, EventType.LAUNCH_TIMED_OUT))
    return Outcome(launch, changed=bool(updated))


def _thread_title(launch: Launch) -> str:
    first_line = (launch.initial_prompt or "").strip().splitlines()[:1]
    title = first_line[0] if first_line else launch.workspace.name
    return title[: Thread._meta.get_field("title").max_length]


def _daemon_error_code(payload: dict) -> str:
    code = payload.get("code")
    if isinstance(code, str) and code and len(code) <= 64:
        return code
    return LaunchErrorCode.DAEMON_ERROR


def launches_expire(*, now=None, dry_run: bool = False) -> int:
    """Time out every launch still `pending` after its deadline (its waiter is gone: a crash or a disconnect).

    Returns how many; with `dry_run`, only counts them.
    """
    now = now or timezone.now()
    stale = Launch.objects.filter(status=LaunchStatus.PENDING, expires_at__lte=now)
    if dry_run:
        return stale.count()
    with transaction.atomic():
        # Locked (skipping none), so an acknowledgement cannot land between the read and the write.
        rows = list(stale.select_for_update().order_by("pk").values_list("pk", "user_session_id"))
        count = Launch.objects.filter(pk__in=[pk for pk, _ in rows]).update(
            status=LaunchStatus.TIMED_OUT, error_code=LaunchErrorCode.DAEMON_TIMEOUT, timed_out_at=now, updated_at=now
        )
        with_thread = [pk for pk, thread_id in rows if thread_id is not None]
        launches = Launch.objects.filter(pk__in=with_thread).order_by("user_session_id", "pk")
        for launch in launches:
            record_events(launch.user_session_id, *_launch_events(launch, EventType.LAUNCH_TIMED_OUT))
    return count


# --- machine channels: one per machine (Device.channel_id); opening one replaces the last -------------------------


def machine_channel_open(*, user_id, machine_id, channel_id, token=None, arrived=None, now=None) -> ChannelState | None:
    """Make `channel_id` the machine's one channel if it is one of the user's, and mark it seen, in one statement
    that also says what is pending for it and records the use of `token` (the caller's) when due; the channel it
    replaces (on any server process) is woken on commit and ends, this one is not (`realtime.from_origin`). None: no
    such machine of the user's.

    The connect that arrived last holds the slot: one that arrived before the current channel's and opens after it
    (two connects of one machine open at once) does not take its place and reads as replaced, so a daemon's own
    abandoned connect cannot end its live one. `arrived`: when the connect arrived (`time.monotonic()`, before its
    wait for a turn), now if not given; written, and compared, as that many seconds before the statement by the
    database's clock, one clock for every server process (`_arrival_sql`).

    Written out (acp/serving/rawsql.py): building and compiling it through the ORM cost a daemon's connect more CPU
    than the statement (bench/channel.py --profile), and each round trip to the database a connect makes is a wait
    for the GIL when it comes back, which in a reconnect storm bounds how many connects a second a worker opens."""
    db = rawsql.database()
    postgres = db.vendor == "postgresql"
    now = now or timezone.now()
    seen = rawsql.db_value(db, Device, "last_seen_at", now)
    waited = 0.0 if arrived is None else max(0.0, time.monotonic() - arrived)
    arrival = waited if postgres else rawsql.db_value(db, Device, "channel_opened_at", now - timedelta(seconds=waited))
    channel = rawsql.db_value(db, Device, "channel_id", channel_id)
    returning, returning_params = "1", []
    if postgres:
        returning, returning_params = "pg_notify(%s, %s)", [realtime.CHANNEL, _origin_key(machine_id, channel_id)]
    with db.cursor() as cursor:
        before, before_params = _token_use_first(cursor, postgres, token, now)
        cursor.execute(
            _channel_open_sql(db.vendor, returning, before),
            [
                *before_params,
                seen,
                seen,
                arrival,  # the channel id's CASE: not later than this arrival…
                channel,  # …then this channel
                arrival,  # the arrival's CASE: likewise
                arrival,
                rawsql.db_value(db, Device, "id", machine_id),
                rawsql.db_value(db, Device, "user", user_id),
                *returning_params,
                channel,
                *pending_work_params(db, now),
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    return ChannelState(
        current=bool(row[1]), token_usable=True, launches_pending=bool(row[2]), commands_pending=bool(row[3])
    )


def _token_use_first(cursor, postgres: bool, token, now) -> tuple[str, list]:
    """The UPDATE recording `token`'s use, when due, to run inside the open's statement, and its parameters ("" when
    none is due). SQLite, whose WITH takes no UPDATE, runs it on its own first."""
    statement = None if token is None else token_use_statement(token=token, now=now)
    if statement is None:
        return "", []
    if not postgres:
        cursor.execute(*statement)
        return "", []
    return statement


def _origin_key(machine_id, channel_id) -> str:
    return realtime.from_origin(realtime.machine_key(machine_id), channel_id)


@functools.cache
def _channel_open_sql(vendor: str, returning: str, before: str = "") -> str:
    """One per database vendor (names are quoted by its backend); `before`, an UPDATE made in the same statement."""
    device, col = rawsql.quote(Device._meta.db_table), rawsql.column
    opened, arrival = col(Device, "channel_opened_at"), _arrival_sql(vendor)
    not_later = f"({opened} IS NULL OR {opened} <= {arrival})"
    taken = ", ".join(
        f"{col(Device, name)} = CASE WHEN {not_later} THEN {value} ELSE {col(Device, name)} END"
        for name, value in (("channel_id", "%s"), ("channel_opened_at", arrival))
    )
    return (
        (f"WITH written_first AS ({before}) " if before else "")
        + f"UPDATE {device} SET {col(Device, 'last_seen_at')} = %s, {col(Device, 'updated_at')} = %s, {taken}"
        f" WHERE {col(Device, 'id')} = %s AND {col(Device, 'user')} = %s"
        f" RETURNING {returning}, {col(Device, 'channel_id')} = %s, {pending_work_sql(vendor, device)}"
    )


def _arrival_sql(vendor: str) -> str:
    """When a connect arrived, its one parameter the seconds since. SQLite serves one process: its clock's time."""
    return "(statement_timestamp() - make_interval(secs => %s))" if vendor == "postgresql" else "%s"
