"""Every write and state change of workspaces and launches.

The launch handshake: `launch_create` records a launch `pending` and wakes the machine's daemon
(NOTIFY `acp.realtime.machine_key`); the daemon answers with `launch_acknowledge` (NOTIFY
`launch:<launch_id>`), which on "ok" creates the session's thread (or reuses the caller's) and local
session in the same transaction; the waiting request reads the result, or, at its deadline, calls
`launch_time_out`. Every move is a conditional write on the launch row, so whichever of the
acknowledgement and the timeout comes first wins, in any server process.
"""

import collections
import dataclasses
import functools
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from acp import realtime
from acp.domain import Conflict, InvalidInput, NotFound, Outcome
from acp.models import Device
from acp.references import gone_references, lock_model_fields, lock_row
from acp.services import tokens_use_statement
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


@dataclasses.dataclass(frozen=True)
class ChannelOpen:
    """A connect's ask (`machine_channels_open`): make `channel_id` the channel of `user_id`'s machine `machine_id`,
    for `token` (the caller's, or None), the connect having arrived at `arrived` (`time.monotonic()`, or None)."""

    user_id: object
    machine_id: object
    channel_id: uuid.UUID
    token: object = None
    arrived: float | None = None


def machine_channel_open(*, user_id, machine_id, channel_id, token=None, arrived=None, now=None) -> ChannelState | None:
    """Make `channel_id` the machine's one channel if it is one of the user's, and mark it seen, in one statement
    that also says what is pending for it and records the use of `token` (the caller's) when due; the channel it
    replaces (on any server process) is woken on commit and ends, this one is not (`realtime.from_origin`). None: no
    such machine of the user's.

    The connect that arrived last holds the slot: one that arrived before the current channel's and opens after it
    (two connects of one machine open at once) does not take its place and reads as replaced, so a daemon's own
    abandoned connect cannot end its live one. `arrived`: when the connect arrived (`time.monotonic()`, before its
    wait for a turn), now if not given; written, and compared, as that many seconds before the statement by the
    database's clock, one clock for every server process.

    Written out (acp/serving/rawsql.py): building and compiling it through the ORM cost a daemon's connect more CPU
    than the statement (bench/channel.py --profile), and each round trip to the database a connect makes is a wait
    for the GIL when it comes back, which in a reconnect storm bounds how many connects a second a worker opens."""
    ask = ChannelOpen(user_id, machine_id, channel_id, token, arrived)
    return machine_channels_open([ask], now=now)[0]


def machine_channels_open(asks: list[ChannelOpen], *, now=None) -> list[ChannelState | None]:
    """`machine_channel_open` for each of `asks` (a batch of connects, acp/serving/fast_streams.py): their states, in
    the same order. On PostgreSQL one statement opens them all and records their tokens' uses; a machine asked for
    twice has its later ask in a statement of its own after it, so the last to arrive holds the slot as if they had
    come apart. SQLite (one process, `bin/serve`) opens them one by one."""
    db = rawsql.database()
    now = now or timezone.now()
    states = {}
    with db.cursor() as cursor:
        for part in _each_machine_once(asks):
            if db.vendor == "postgresql":
                states.update(_open_together(cursor, db, part, now))
            else:
                states.update((place, _open_alone(cursor, db, ask, now)) for place, ask in part)
    return [states.get(place) for place in range(len(asks))]


def _each_machine_once(asks: list[ChannelOpen]) -> list[list[tuple[int, ChannelOpen]]]:
    """`asks` with their places, in parts that name each machine at most once: a machine's second ask is in the
    second part, and so on."""
    parts, asked = [], collections.Counter()
    for place, ask in enumerate(asks):
        earlier = asked[ask.machine_id]
        asked[ask.machine_id] += 1
        if earlier == len(parts):
            parts.append([])
        parts[earlier].append((place, ask))
    return parts


def _open_together(cursor, db, part: list[tuple[int, ChannelOpen]], now) -> dict[int, ChannelState]:
    """PostgreSQL: open `part` (each machine once) in one statement, which also records its tokens' uses when due and
    wakes the channels each replaces."""
    tokens = tokens_use_statement(tokens=[ask.token for _, ask in part if ask.token is not None], now=now)
    before, before_params = tokens or ("", [])
    asked = []
    for place, ask in part:
        asked += [
            place,
            rawsql.db_value(db, Device, "id", ask.machine_id),
            rawsql.db_value(db, Device, "user", ask.user_id),
            rawsql.db_value(db, Device, "channel_id", ask.channel_id),
            _waited(ask.arrived),
            _origin_key(ask.machine_id, ask.channel_id),
        ]
    seen = rawsql.db_value(db, Device, "last_seen_at", now)
    params = [*before_params, *asked, seen, seen, realtime.CHANNEL, *pending_work_params(db, now)]
    cursor.execute(_open_together_sql(len(part), before), params)
    return {row[0]: _channel_state(row[2:]) for row in cursor.fetchall()}


def _open_alone(cursor, db, ask: ChannelOpen, now) -> ChannelState | None:
    """SQLite: open `ask`; its token's use, when due, recorded first (its WITH takes no UPDATE)."""
    tokens = None if ask.token is None else tokens_use_statement(tokens=[ask.token], now=now)
    if tokens is not None:
        cursor.execute(*tokens)
    seen = rawsql.db_value(db, Device, "last_seen_at", now)
    arrival = rawsql.db_value(db, Device, "channel_opened_at", now - timedelta(seconds=_waited(ask.arrived)))
    channel = rawsql.db_value(db, Device, "channel_id", ask.channel_id)
    cursor.execute(
        _open_alone_sql(db.vendor),
        [
            seen,
            seen,
            arrival,  # the channel id's CASE: not later than this arrival…
            channel,  # …then this channel
            arrival,  # the arrival's CASE: likewise
            arrival,
            rawsql.db_value(db, Device, "id", ask.machine_id),
            rawsql.db_value(db, Device, "user", ask.user_id),
            channel,
            *pending_work_params(db, now),
        ],
    )
    row = cursor.fetchone()
    return None if row is None else _channel_state(row)


def _waited(arrived: float | None) -> float:
    """Seconds since a connect arrived (`time.monotonic()`; None: it arrives now)."""
    return 0.0 if arrived is None else max(0.0, time.monotonic() - arrived)


def _channel_state(row) -> ChannelState:
    """From an open's returned row: whether it holds the slot, whether launches and commands are pending."""
    current, launches_pending, commands_pending = row
    return ChannelState(
        current=bool(current),
        token_usable=True,
        launches_pending=bool(launches_pending),
        commands_pending=bool(commands_pending),
    )


def _origin_key(machine_id, channel_id) -> str:
    return realtime.from_origin(realtime.machine_key(machine_id), channel_id)


@functools.lru_cache(maxsize=64)  # one per number of machines (a batch's size at most) and token update
def _open_together_sql(count: int, before: str) -> str:
    """PostgreSQL: opens `count` asks, each of the six parameters `_open_together` gives, with `before` (an UPDATE)
    made in the same statement. Returns each ask's place, its wake-up of the channel it replaces, and its state."""
    db = rawsql.database()
    device, col = rawsql.quote(Device._meta.db_table), rawsql.column
    types = [
        "integer",
        Device._meta.pk.cast_db_type(db),
        Device._meta.get_field("user").target_field.cast_db_type(db),
        Device._meta.get_field("channel_id").cast_db_type(db),
        "double precision",
        "text",
    ]
    ask = "(" + ", ".join(f"CAST(%s AS {db_type})" for db_type in types) + ")"
    asks = f"ask (place, machine, owner, channel, waited, notice) AS (VALUES {', '.join([ask] * count)})"
    arrival = "(statement_timestamp() - make_interval(secs => ask.waited))"
    locked, locked_join = "", ""
    if count > 1:  # several machines: locked in key order, as the presence refresh locks them (no deadlock)
        asked = f"({col(Device, 'id')}, {col(Device, 'user')}) IN (SELECT machine, owner FROM ask)"
        locked, joined = rawsql.locked_in_key_order(Device, asked)
        locked, locked_join = f", {locked}", f" AND {joined}"
    return (
        f"WITH {f'written_first AS ({before}), ' if before else ''}{asks}"
        f" UPDATE {device} SET {col(Device, 'last_seen_at')} = %s, {col(Device, 'updated_at')} = %s,"
        f" {_slot_taken_sql(arrival, 'ask.channel')}"
        f" FROM ask{locked} WHERE {device}.{col(Device, 'id')} = ask.machine"
        f" AND {device}.{col(Device, 'user')} = ask.owner{locked_join}"
        f" RETURNING ask.place, pg_notify(%s, ask.notice), {device}.{col(Device, 'channel_id')} = ask.channel,"
        f" {pending_work_sql(db.vendor, device)}"
    )


@functools.cache
def _open_alone_sql(vendor: str) -> str:
    """SQLite (names are quoted by its backend): opens one ask; returns its state."""
    device, col = rawsql.quote(Device._meta.db_table), rawsql.column
    return (
        f"UPDATE {device} SET {col(Device, 'last_seen_at')} = %s, {col(Device, 'updated_at')} = %s,"
        f" {_slot_taken_sql('%s', '%s')}"
        f" WHERE {col(Device, 'id')} = %s AND {col(Device, 'user')} = %s"
        f" RETURNING {col(Device, 'channel_id')} = %s, {pending_work_sql(vendor, device)}"
    )


def _slot_taken_sql(arrival: str, channel: str) -> str:
    """The SET of an open: the machine's channel becomes `channel`, which arrived at `arrival`, unless the channel
    already there arrived later."""
    col = rawsql.column
    opened = col(Device, "channel_opened_at")
    not_later = f"({opened} IS NULL OR {opened} <= {arrival})"
    return ", ".join(
        f"{col(Device, name)} = CASE WHEN {not_later} THEN {value} ELSE {col(Device, name)} END"
        for name, value in (("channel_id", channel), ("channel_opened_at", arrival))
    )
