"""Reads of launches."""

import functools
from dataclasses import dataclass

from django.db.models import QuerySet
from django.utils import timezone

from acp.cleanup import Target
from acp.models import ApiToken, Device, User
from acp.serving import rawsql
from commands.choices import CommandStatus
from commands.models import ControlCommand, LocalSession
from sessions.choices import LAUNCH_TERMINAL_STATES, LaunchStatus
from sessions.models import Launch


@dataclass(frozen=True)
class ChannelState:
    """What a machine's channel must know before it fetches: is it still the machine's, may its token still be
    used, and is anything pending (what its fetch reads only if so)."""

    current: bool
    token_usable: bool
    launches_pending: bool
    commands_pending: bool


def machine_channel_state(*, machine_id, channel_id, token_id, now=None) -> ChannelState:
    """One statement, written once (the ORM's compiler cost more than the query at every daemon's connect): whether
    `channel_id` is still the machine's channel, whether the token that opened it is still usable (not revoked nor
    expired, its user active), and whether the machine has pending launches (`launch_queue`) and pending commands
    (`commands_pending_on_machine`). A deleted machine's channel is not current."""
    now = now or timezone.now()
    db = rawsql.database()
    with db.cursor() as cursor:
        cursor.execute(
            _channel_state_sql(db.vendor),
            [
                rawsql.db_value(db, Device, "channel_id", channel_id),
                rawsql.db_value(db, ApiToken, "id", token_id),
                rawsql.db_value(db, ApiToken, "expires_at", now),
                *pending_work_params(db, now),
                rawsql.db_value(db, Device, "id", machine_id),
            ],
        )
        row = cursor.fetchone()
    return ChannelState(*(bool(value) for value in row)) if row else ChannelState(False, False, False, False)


@functools.cache
def _channel_state_sql(vendor: str) -> str:  # one per database vendor: names are quoted by its backend
    device = rawsql.quote(Device._meta.db_table)
    token, user = rawsql.quote(ApiToken._meta.db_table), rawsql.quote(User._meta.db_table)
    col = rawsql.column
    return (
        f"SELECT d.{col(Device, 'channel_id')} = %s,"
        f" EXISTS (SELECT 1 FROM {token} t JOIN {user} u ON u.{col(User, 'id')} = t.{col(ApiToken, 'user')}"
        f" WHERE t.{col(ApiToken, 'id')} = %s AND t.{col(ApiToken, 'revoked_at')} IS NULL"
        f" AND (t.{col(ApiToken, 'expires_at')} IS NULL OR t.{col(ApiToken, 'expires_at')} > %s)"
        f" AND u.{col(User, 'is_active')}),"
        f" {pending_work_sql(vendor, 'd')}"
        f" FROM {device} d WHERE d.{col(Device, 'id')} = %s"
    )


@functools.cache
def pending_work_sql(vendor: str, device: str) -> str:
    """Two SQL booleans, whether the machine `device` (a row reference to the devices table) has pending launches
    (`launch_queue`) and pending commands (`commands_pending_on_machine`); its parameters: `pending_work_params`."""
    launch, command = rawsql.quote(Launch._meta.db_table), rawsql.quote(ControlCommand._meta.db_table)
    session = rawsql.quote(LocalSession._meta.db_table)
    col = rawsql.column
    return (
        f"EXISTS (SELECT 1 FROM {launch} l WHERE l.{col(Launch, 'machine')} = {device}.{col(Device, 'id')}"
        f" AND l.{col(Launch, 'status')} = %s AND l.{col(Launch, 'expires_at')} > %s),"
        f" EXISTS (SELECT 1 FROM {command} c"
        f" JOIN {session} s ON s.{col(LocalSession, 'id')} = c.{col(ControlCommand, 'session')}"
        f" WHERE s.{col(LocalSession, 'device')} = {device}.{col(Device, 'id')}"
        f" AND c.{col(ControlCommand, 'status')} = %s)"
    )


def pending_work_params(db, now) -> list:
    return [LaunchStatus.PENDING.value, rawsql.db_value(db, Launch, "expires_at", now), CommandStatus.PENDING.value]


def launch_queue(*, machine_id, now=None) -> QuerySet[Launch]:
    """A machine's launches its daemon should start: pending and still within their deadline, oldest first."""
    now = now or timezone.now()
    return Launch.objects.filter(machine_id=machine_id, status=LaunchStatus.PENDING, expires_at__gt=now).order_by(
        "created_at", "id"
    )


# --- retention and the support dashboard (acp.composition) ----------------------------------------------------------


def retention_targets(*, cutoff, now, **options) -> list[Target]:
    """Finished launches last changed before `cutoff` (a pending one is never touched)."""
    return [Target("launches", Launch.objects.filter(status__in=LAUNCH_TERMINAL_STATES, updated_at__lt=cutoff))]


def dashboard_counts(*, now) -> dict[str, int]:
    start_of_day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "launches_timed_out_today": Launch.objects.filter(
            status=LaunchStatus.TIMED_OUT, updated_at__gte=start_of_day
        ).count(),
    }
