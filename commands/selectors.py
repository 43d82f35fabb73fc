"""Reads of threads, local sessions and control commands that are more than one line."""

from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Window

from acp.cleanup import Target
from acp.serving import optimised, rawsql
from commands.choices import COMMAND_TERMINAL_STATES, SESSION_TERMINAL_STATES, CommandStatus
from commands.models import ControlCommand, LocalSession, Thread, ThreadEvent

STALE_PENDING_AFTER = timedelta(minutes=5)


def threads_visible(*, user, device_id=None) -> QuerySet[Thread]:
    """The user's threads; for a device token, those with at least one session on its device."""
    threads = Thread.objects.filter(user=user)
    if device_id is not None:
        threads = threads.filter(Exists(LocalSession.objects.filter(thread=OuterRef("pk"), device_id=device_id)))
    return threads


@dataclass(frozen=True)
class SessionScope:
    """The sessions of one thread a caller may see: the user's, and for a device token only its device's.

    Optimised, its sessions are found and locked with written-out SQL (`has`, commands/services.py), otherwise with
    the ORM through `sessions()`: one rule either way.
    """

    user_id: object
    thread_id: object
    device_id: object = None

    def criteria(self) -> dict[str, object]:
        """The values a visible session has, by LocalSession field."""
        criteria = {"user": self.user_id, "thread": self.thread_id}
        if self.device_id is not None:
            criteria["device"] = self.device_id
        return criteria

    def sessions(self) -> QuerySet[LocalSession]:
        return LocalSession.objects.filter(**self.criteria())

    def has(self, session_id) -> bool:
        """Whether that session is one of these (asked by every command create, list and empty poll)."""
        if optimised():
            return rawsql.exists(LocalSession, {"id": session_id, **self.criteria()})
        return self.sessions().filter(pk=session_id).exists()


def sessions_visible(*, user, thread_id, device_id=None) -> QuerySet[LocalSession]:
    """The sessions of `thread_id` the caller may see: the user's, and for a device token only its device's."""
    return SessionScope(user.pk, thread_id, device_id).sessions()


def commands_visible(*, user, thread_id, session_id, device_id=None) -> QuerySet[ControlCommand]:
    """The commands of one session (whose thread is `thread_id`) the caller may see."""
    commands = ControlCommand.objects.filter(user=user, thread_id=thread_id, session_id=session_id)
    if device_id is not None:
        commands = commands.filter(session__device_id=device_id)
    return commands


def commands_pending(*, user, thread_id, session_id, device_id=None, limit: int) -> tuple[list[ControlCommand], int]:
    """The oldest `limit` pending commands of a session and how many are pending in all, in one query."""
    rows = list(
        commands_visible(user=user, thread_id=thread_id, session_id=session_id, device_id=device_id)
        .filter(status=CommandStatus.PENDING)
        .annotate(pending_total=Window(Count("pk")))
        .order_by("created_at", "id")[:limit]
    )
    return rows, rows[0].pending_total if rows else 0


def commands_pending_on_machine(*, device_id) -> QuerySet[ControlCommand]:
    """The pending commands of every session on a machine, oldest first (its channel's backlog)."""
    return ControlCommand.objects.filter(session__device_id=device_id, status=CommandStatus.PENDING).order_by(
        "created_at", "id"
    )


def events_page(
    *,
    thread_id,
    after: int = 0,
    before: int | None = None,
    session_id=None,
    types: list[str] | None = None,
    source: str | None = None,
    limit: int,
) -> tuple[list[ThreadEvent], int]:
    """The thread's first `limit` events with `after < sequence < before` matching the filters, oldest first, and
    how many match in all, in one query."""
    events = ThreadEvent.objects.filter(thread_id=thread_id, sequence__gt=after)
    if before is not None:
        events = events.filter(sequence__lt=before)
    if session_id is not None:
        events = events.filter(session_id=session_id)
    if types:
        events = events.filter(type__in=types)
    if source is not None:
        events = events.filter(source=source)
    rows = list(events.annotate(matching=Window(Count("pk"))).order_by("sequence")[:limit])
    return rows, rows[0].matching if rows else 0


# --- retention and the support dashboard (acp.composition) ----------------------------------------------------------


def retention_targets(*, cutoff, now, **options) -> list[Target]:
    """The timelines of threads with no live session and no event since `cutoff`; ended commands and ended local
    sessions (with all their commands) last changed before `cutoff`."""
    ended_sessions = LocalSession.objects.filter(status__in=SESSION_TERMINAL_STATES, updated_at__lt=cutoff)
    live_session = LocalSession.objects.filter(thread_id=OuterRef("thread_id")).exclude(
        status__in=SESSION_TERMINAL_STATES
    )
    recent_event = ThreadEvent.objects.filter(thread_id=OuterRef("thread_id"), created_at__gte=cutoff)
    return [
        Target("thread events", ThreadEvent.objects.filter(~Exists(live_session), ~Exists(recent_event))),
        Target(
            "control commands",
            ControlCommand.objects.filter(
                Q(status__in=COMMAND_TERMINAL_STATES, updated_at__lt=cutoff)
                | Q(session__in=ended_sessions.values("pk"))
            ),
        ),
        Target("local sessions", ended_sessions),
    ]


def dashboard_counts(*, now) -> dict[str, int]:
    return {
        "stale_pending_commands": ControlCommand.objects.filter(
            status=CommandStatus.PENDING, created_at__lt=now - STALE_PENDING_AFTER
        ).count(),
    }
