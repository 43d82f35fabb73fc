"""Workspace bindings: a local folder on a device bound to a remote environment."""

from django.db import models

from acp.models import Device, Environment, OwnedModel, Project
from bindings.choices import ExecutionMode, SyncMode


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

    def __str__(self):
        return self.name or self.local_path
