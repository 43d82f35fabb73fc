"""Workspaces, and the launches of coding sessions on a user's machine through its daemon."""

from django.db import models
from django.db.models import Q

from acp.models import Device, OwnedModel, Project
from sessions.choices import AckStatus, LaunchErrorCode, LaunchStatus


class Workspace(OwnedModel):
    """Where coding sessions are launched: a project, and the machine to launch on by default."""

    name = models.CharField(max_length=200)
    project = models.ForeignKey(Project, on_delete=models.SET_NULL, null=True, blank=True, related_name="workspaces")
    default_machine = models.ForeignKey(
        Device, on_delete=models.SET_NULL, null=True, blank=True, related_name="default_for_workspaces"
    )

    class Meta(OwnedModel.Meta):
        indexes = [models.Index(fields=["user", "-created_at"], name="workspace_user_created")]

    def __str__(self):
        return self.name


class Launch(OwnedModel):
    """One request to start a coding session on a machine, with everything it asked for and how it ended.

    Launches are history: the launch path never deletes one (they go only with their workspace or machine).
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="launches")
    machine = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="launches")
    # The request, as sent (machine_id is recorded as the machine it resolved to).
    user_session = models.ForeignKey(
        "commands.Thread",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The caller's thread to reuse (user_session_id), if any.",
    )
    metadata = models.JSONField(default=dict, blank=True)
    initial_prompt = models.TextField(null=True, blank=True)
    worktree_name = models.CharField(max_length=255, null=True, blank=True)
    session_settings = models.JSONField(null=True, blank=True)
    resume_session_id = models.CharField(max_length=255, null=True, blank=True)
    agent_session_id = models.CharField(max_length=255, null=True, blank=True)
    # How it went.
    status = models.CharField(max_length=16, choices=LaunchStatus.choices, default=LaunchStatus.PENDING)
    error_code = models.CharField(
        max_length=64, blank=True, default="", help_text="Why it failed or timed out (payload.code)."
    )
    ack_status = models.CharField(max_length=8, choices=AckStatus.choices, null=True, blank=True)
    ack_payload = models.JSONField(null=True, blank=True, help_text="The daemon's acknowledgement payload, as sent.")
    expires_at = models.DateTimeField(help_text="The daemon must acknowledge before this; later acks get 409.")
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    timed_out_at = models.DateTimeField(null=True, blank=True)
    # What an "ok" acknowledgement created (or, for the thread, reused).
    thread = models.ForeignKey("commands.Thread", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    local_session = models.ForeignKey(
        "commands.LocalSession", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta(OwnedModel.Meta):
        indexes = [
            models.Index(fields=["workspace", "-created_at"], name="launch_workspace_created"),
            # The daemons' fetch: a machine's pending launches, oldest first.
            models.Index(
                fields=["machine", "created_at"], name="launch_machine_pending", condition=Q(status="pending")
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=LaunchStatus.values), name="launch_status_valid"),
            models.CheckConstraint(
                condition=Q(ack_status__isnull=True) | Q(ack_status__in=AckStatus.values),
                name="launch_ack_status_valid",
            ),
            models.CheckConstraint(
                condition=~Q(status=LaunchStatus.PENDING)
                | Q(ack_status__isnull=True, acknowledged_at__isnull=True, timed_out_at__isnull=True),
                name="launch_pending_has_no_outcome",
            ),
            models.CheckConstraint(
                condition=~Q(status=LaunchStatus.ACKNOWLEDGED)
                | Q(ack_status=AckStatus.OK, acknowledged_at__isnull=False),
                name="launch_acknowledged_was_ok",
            ),
            models.CheckConstraint(
                condition=~Q(status=LaunchStatus.FAILED)
                | Q(ack_status=AckStatus.ERROR, acknowledged_at__isnull=False)
                | Q(ack_status__isnull=True, error_code=LaunchErrorCode.MACHINE_OFFLINE),
                name="launch_failed_has_a_cause",
            ),
            models.CheckConstraint(
                condition=~Q(status=LaunchStatus.TIMED_OUT)
                | Q(ack_status__isnull=True, timed_out_at__isnull=False, error_code=LaunchErrorCode.DAEMON_TIMEOUT),
                name="launch_timed_out_has_no_ack",
            ),
        ]

    def __str__(self):
        return f"launch {self.id} ({self.status})"
