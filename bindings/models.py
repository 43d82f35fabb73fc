"""Workspace bindings (a local folder on a device bound to a remote environment) and their push/pull sessions."""

from django.db import models
from django.db.models import Q

from acp.models import Device, Environment, OwnedModel, Project
from bindings.choices import ExecutionMode, SyncDirection, SyncMode, SyncSessionStatus

ONE_PREPARED_CONSTRAINT = "syncsession_one_prepared_per_binding_direction"
MAX_SIGNATURE_LENGTH = 512


class WorkspaceBinding(OwnedModel):
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="workspace_bindings")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="workspace_bindings")
    project = models.ForeignKey(
        Project, on_delete=models.SET_NULL, null=True, blank=True, related_name="workspace_bindings"
    )
    name = models.CharField(max_length=200, blank=True, default="")
    local_path = models.CharField(max_length=4096)
    sync_root = models.CharField(max_length=4096, blank=True, default="")
    ignore_patterns = models.JSONField(default=list, blank=True)
    sync_mode = models.CharField(max_length=16, choices=SyncMode.choices, default=SyncMode.MANUAL)
    execution_mode = models.CharField(max_length=16, choices=ExecutionMode.choices, default=ExecutionMode.BRIDGE_LOCAL)
    last_pushed_snapshot_id = models.CharField(max_length=200, null=True, blank=True)
    last_pulled_snapshot_id = models.CharField(max_length=200, null=True, blank=True)

    class Meta(OwnedModel.Meta):
        indexes = [models.Index(fields=["user", "-created_at"], name="binding_user_created")]
        constraints = [
            models.CheckConstraint(condition=Q(sync_mode__in=SyncMode.values), name="binding_sync_mode_valid"),
            models.CheckConstraint(
                condition=Q(execution_mode__in=ExecutionMode.values), name="binding_execution_mode_valid"
            ),
            models.CheckConstraint(condition=~Q(local_path=""), name="binding_local_path_not_empty"),
        ]

    def __str__(self):
        return self.name or self.local_path


class SyncSession(OwnedModel):
    """A prepared push (local → remote) or pull (remote → local) plan of a binding.

    `device`, `environment` and `project` are copied from the binding when the session is prepared.
    Pull sessions also carry the daemon's apply preview and apply result.
    """

    # Indexed by syncsession_binding_created, which starts with it.
    workspace_binding = models.ForeignKey(
        WorkspaceBinding, on_delete=models.CASCADE, related_name="sync_sessions", db_index=False
    )
    direction = models.CharField(max_length=8, choices=SyncDirection.choices)
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="+")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    project = models.ForeignKey(Project, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    status = models.CharField(max_length=16, choices=SyncSessionStatus.choices, default=SyncSessionStatus.PREPARED)
    plan_signature = models.CharField(max_length=MAX_SIGNATURE_LENGTH)
    plan = models.JSONField(default=dict)
    metadata = models.JSONField(default=dict, blank=True)
    preview = models.JSONField(null=True, blank=True)
    preview_signature = models.CharField(max_length=MAX_SIGNATURE_LENGTH, null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    result_signature = models.CharField(max_length=MAX_SIGNATURE_LENGTH, null=True, blank=True)

    class Meta(OwnedModel.Meta):
        verbose_name = "push/pull session"
        indexes = [
            models.Index(fields=["workspace_binding", "direction", "-created_at"], name="syncsession_binding_created"),
            models.Index(fields=["status", "created_at"], name="syncsession_status_created"),
        ]
        constraints = [
            # The invariant of the API: at most one prepared session per (binding, direction), whatever the race.
            models.UniqueConstraint(
                fields=["workspace_binding", "direction"],
                condition=Q(status=SyncSessionStatus.PREPARED),
                name=ONE_PREPARED_CONSTRAINT,
            ),
            models.CheckConstraint(condition=Q(direction__in=SyncDirection.values), name="syncsession_direction_valid"),
            models.CheckConstraint(condition=Q(status__in=SyncSessionStatus.values), name="syncsession_status_valid"),
            models.CheckConstraint(condition=~Q(plan_signature=""), name="syncsession_plan_signature_not_empty"),
            models.CheckConstraint(
                condition=Q(direction=SyncDirection.PULL)
                | Q(
                    preview__isnull=True,
                    preview_signature__isnull=True,
                    result__isnull=True,
                    result_signature__isnull=True,
                ),
                name="syncsession_apply_fields_pull_only",
            ),
        ]

    def __str__(self):
        return f"{self.direction} session {self.id} ({self.status})"
