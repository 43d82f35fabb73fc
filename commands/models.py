"""Threads, local execution sessions on a user's device, and the control commands sent to them."""

import uuid

from django.db import models
from django.utils import timezone

from acp.models import Device, Environment, OwnedModel, Project
from commands.choices import (
    COMMAND_TERMINAL_STATES,
    SESSION_TERMINAL_STATES,
    CommandStatus,
    CommandType,
    EventSource,
    SessionStatus,
    ThreadStatus,
)

_SESSION_TERMINAL = sorted(SESSION_TERMINAL_STATES)
_COMMAND_TERMINAL = sorted(COMMAND_TERMINAL_STATES)


class Thread(OwnedModel):
    environment = models.ForeignKey(Environment, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    project = models.ForeignKey(Project, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    title = models.CharField(max_length=500, blank=True, default="")
    status = models.CharField(max_length=16, choices=ThreadStatus.choices, default=ThreadStatus.ACTIVE)
    metadata = models.JSONField(default=dict, blank=True)
    # The sequence of the thread's newest event: the writer of the next one increments it under the row's lock.
    last_event_sequence = models.BigIntegerField(default=0, editable=False)

    class Meta(OwnedModel.Meta):
        indexes = [models.Index(fields=["user", "-created_at"], name="thread_user_created")]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=ThreadStatus.values), name="thread_status_valid"),
        ]

    def __str__(self):
        return self.title or str(self.id)


class LocalSession(OwnedModel):
    """A coding agent's execution on one of the user's devices, within a thread."""

    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="local_sessions")
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="local_sessions")
    workspace_binding = models.ForeignKey(
        "bindings.WorkspaceBinding", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    environment = models.ForeignKey(Environment, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    status = models.CharField(max_length=16, choices=SessionStatus.choices, default=SessionStatus.CREATED)
    metadata = models.JSONField(default=dict, blank=True)
    error = models.TextField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)

    class Meta(OwnedModel.Meta):
        indexes = [
            models.Index(fields=["thread", "-created_at"], name="localsession_thread_created"),
            models.Index(fields=["device", "status"], name="localsession_device_status"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=SessionStatus.values), name="localsession_status_valid"
            ),
            # An ended session has its end time, and only an ended one.
            models.CheckConstraint(
                condition=models.Q(status__in=_SESSION_TERMINAL, completed_at__isnull=False)
                | (~models.Q(status__in=_SESSION_TERMINAL) & models.Q(completed_at__isnull=True)),
                name="localsession_completed_at_iff_ended",
            ),
            # Only a live session can be paused.
            models.CheckConstraint(
                condition=models.Q(paused_at__isnull=True) | ~models.Q(status__in=_SESSION_TERMINAL),
                name="localsession_paused_only_while_live",
            ),
        ]

    def __str__(self):
        return f"local session {self.id} ({self.status})"


class ControlCommand(OwnedModel):
    session = models.ForeignKey(LocalSession, on_delete=models.CASCADE, related_name="commands")
    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="+")
    command_type = models.CharField(max_length=16, choices=CommandType.choices)
    payload = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=CommandStatus.choices, default=CommandStatus.PENDING)
    result = models.JSONField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta(OwnedModel.Meta):
        indexes = [
            models.Index(fields=["session", "status", "created_at"], name="command_session_status"),
            models.Index(fields=["created_at"], name="command_pending_created", condition=models.Q(status="pending")),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=CommandStatus.values), name="command_status_valid"),
            models.CheckConstraint(condition=models.Q(command_type__in=CommandType.values), name="command_type_valid"),
            # A finished (completed or cancelled) command has its end time, and only a finished one.
            models.CheckConstraint(
                condition=models.Q(status__in=_COMMAND_TERMINAL, completed_at__isnull=False)
                | (~models.Q(status__in=_COMMAND_TERMINAL) & models.Q(completed_at__isnull=True)),
                name="command_completed_at_iff_finished",
            ),
            # Acknowledged and completed commands were acknowledged at some time; pending ones were not.
            models.CheckConstraint(
                condition=~models.Q(status__in=[CommandStatus.ACKNOWLEDGED, CommandStatus.COMPLETED])
                | models.Q(acknowledged_at__isnull=False),
                name="command_acknowledged_at_set",
            ),
            models.CheckConstraint(
                condition=~models.Q(status=CommandStatus.PENDING) | models.Q(acknowledged_at__isnull=True),
                name="command_pending_not_acknowledged",
            ),
            models.CheckConstraint(
                condition=models.Q(acknowledged_at__isnull=True)
                | models.Q(completed_at__isnull=True)
                | models.Q(completed_at__gte=models.F("acknowledged_at")),
                name="command_completed_after_acknowledged",
            ),
        ]

    def __str__(self):
        return f"{self.command_type} {self.id} ({self.status})"


class ThreadEvent(models.Model):
    """One entry of a thread's timeline: what the daemon, a user or the server itself recorded, in order.

    `sequence` runs 1, 2, 3… per thread with no gap: allocated from `Thread.last_event_sequence` in the writer's
    transaction (commands.services.thread_events_append), unique per thread as the backstop.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="events")
    session = models.ForeignKey(
        LocalSession, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_index=False
    )
    sequence = models.BigIntegerField()
    type = models.CharField(max_length=64)
    source = models.CharField(max_length=8, choices=EventSource.choices)
    data = models.JSONField(default=dict, blank=True)
    client_event_id = models.CharField(max_length=200, null=True, blank=True)
    occurred_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["thread", "sequence"]
        indexes = [
            models.Index(fields=["session", "sequence"], name="threadevent_session_sequence"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["thread", "sequence"], name="threadevent_thread_sequence_unique"),
            models.UniqueConstraint(
                fields=["thread", "client_event_id"],
                condition=models.Q(client_event_id__isnull=False),
                name="threadevent_thread_client_event_id_unique",
            ),
            models.CheckConstraint(condition=models.Q(sequence__gte=1), name="threadevent_sequence_positive"),
            models.CheckConstraint(condition=models.Q(source__in=EventSource.values), name="threadevent_source_valid"),
        ]

    def __str__(self):
        return f"#{self.sequence} {self.type}"
