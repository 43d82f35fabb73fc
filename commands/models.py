"""Threads, local execution sessions on a user's device, and the control commands sent to them."""

from django.db import models

from acp.models import Device, Environment, OwnedModel
from commands.choices import CommandStatus, CommandType, SessionStatus, ThreadStatus


class Thread(OwnedModel):
    environment = models.ForeignKey(Environment, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    title = models.CharField(max_length=500, blank=True, default="")
    status = models.CharField(max_length=16, choices=ThreadStatus.choices, default=ThreadStatus.ACTIVE)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta(OwnedModel.Meta):
        indexes = [models.Index(fields=["user", "-created_at"], name="thread_user_created")]

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

    def __str__(self):
        return f"{self.command_type} {self.id} ({self.status})"
