"""Wire format of workspace bindings and push/pull sessions (`/v1`, camelCase)."""

import json

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from acp.api.errors import PayloadTooLarge
from acp.api.registry_serializers import OwnedModelSerializer
from acp.api.serializers import (
    JSONObjectField,
    ModelSerializer,
    OwnedPrimaryKeyRelatedField,
    Serializer,
    StrictCharField,
)
from acp.models import Device, Environment, Project
from bindings import services
from bindings.choices import ExecutionMode, SyncMode, SyncSessionStatus
from bindings.models import MAX_SIGNATURE_LENGTH, SyncSession, WorkspaceBinding


class SignatureField(StrictCharField):
    """A signature is an opaque identity: 1–512 characters, kept exactly as sent."""

    def __init__(self, **kwargs):
        kwargs.setdefault("min_length", 1)
        kwargs.setdefault("max_length", MAX_SIGNATURE_LENGTH)
        super().__init__(**kwargs)


class OwnedIdField(OwnedPrimaryKeyRelatedField):
    """A caller-owned object's id, read back from `<field>_id` without a query."""

    def __init__(self, **kwargs):
        super().__init__(pk_field=serializers.UUIDField(format="hex_verbose"), **kwargs)


@extend_schema_field(OpenApiTypes.OBJECT)
class SizedJSONObjectField(JSONObjectField):
    """A JSON object; with `max_bytes_setting`, its compact UTF-8 JSON encoding must fit that many bytes, else 413."""

    def __init__(self, *, max_bytes_setting: str | None = None, **kwargs):
        self.max_bytes_setting = max_bytes_setting
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        data = super().to_internal_value(data)  # DRF already refuses what JSON cannot encode (1e400 → infinity)
        if self.max_bytes_setting:
            limit = getattr(settings, self.max_bytes_setting)
            size = len(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode())
            if size > limit:
                raise PayloadTooLarge(
                    f"{self.field_name} is {size} bytes as JSON; the limit is {limit}.",
                    details={"field": self.field_name, "size": size, "limit": limit},
                )
        return data


# --- Workspace bindings --------------------------------------------------------------------------

BINDING_FIELDS = [
    "id",
    "userId",
    "deviceId",
    "environmentId",
    "projectId",
    "name",
    "localPath",
    "syncRoot",
    "ignorePatterns",
    "syncMode",
    "executionMode",
    "lastPushedSnapshotId",
    "lastPulledSnapshotId",
    "createdAt",
    "updatedAt",
]


class WorkspaceBindingSerializer(OwnedModelSerializer):
    deviceId = OwnedIdField(source="device", queryset=Device.objects.all())
    environmentId = OwnedIdField(source="environment", queryset=Environment.objects.all(), help_text="Computer ID.")
    projectId = OwnedIdField(source="project", queryset=Project.objects.all(), allow_null=True, required=False)
    name = StrictCharField(max_length=200, required=False, allow_blank=True, trim_whitespace=True)
    localPath = StrictCharField(source="local_path", max_length=4096)
    syncRoot = StrictCharField(
        source="sync_root", max_length=4096, required=False, allow_blank=True, trim_whitespace=True
    )
    ignorePatterns = serializers.ListField(
        source="ignore_patterns",
        child=StrictCharField(max_length=1024),
        max_length=1000,
        required=False,
    )
    syncMode = serializers.ChoiceField(source="sync_mode", choices=SyncMode.choices, required=False)
    executionMode = serializers.ChoiceField(source="execution_mode", choices=ExecutionMode.choices, required=False)
    lastPushedSnapshotId = StrictCharField(
        source="last_pushed_snapshot_id", max_length=200, allow_null=True, required=False, trim_whitespace=True
    )
    lastPulledSnapshotId = StrictCharField(
        source="last_pulled_snapshot_id", max_length=200, allow_null=True, required=False, trim_whitespace=True
    )

    class Meta:
        model = WorkspaceBinding
        fields = BINDING_FIELDS

    def create(self, validated_data):
        return services.binding_create(**validated_data)

    def update(self, instance, validated_data):
        return services.binding_update(binding=instance, **validated_data)


# The fields of a binding a device token may change: the daemon's own sync bookkeeping.
DEVICE_WRITABLE_BINDING_FIELDS = frozenset({"lastPushedSnapshotId", "lastPulledSnapshotId"})


# --- Push and pull sessions ----------------------------------------------------------------------

SESSION_FIELDS = [
    "id",
    "workspaceBindingId",
    "userId",
    "deviceId",
    "environmentId",
    "projectId",
    "status",
    "planSignature",
    "plan",
    "metadata",
    "createdAt",
    "updatedAt",
]
PULL_ONLY_FIELDS = ["preview", "previewSignature", "result", "resultSignature"]


class PushSessionSerializer(ModelSerializer):
    id = serializers.UUIDField(read_only=True, help_text="Unique identifier.")
    workspaceBindingId = serializers.UUIDField(source="workspace_binding_id", read_only=True)
    userId = serializers.UUIDField(source="user_id", read_only=True, help_text="User ID.")
    deviceId = serializers.UUIDField(source="device_id", read_only=True)
    environmentId = serializers.UUIDField(source="environment_id", read_only=True, help_text="Computer ID.")
    projectId = serializers.UUIDField(source="project_id", read_only=True, allow_null=True, help_text="Project ID.")
    status = serializers.ChoiceField(
        choices=SyncSessionStatus.choices, read_only=True, help_text="Current lifecycle status."
    )
    planSignature = serializers.CharField(source="plan_signature", read_only=True)
    plan = JSONObjectField(read_only=True)
    metadata = JSONObjectField(read_only=True, help_text="Free-form metadata object.")
    createdAt = serializers.DateTimeField(source="created_at", read_only=True, help_text="ISO 8601 timestamp.")
    updatedAt = serializers.DateTimeField(source="updated_at", read_only=True, help_text="ISO 8601 timestamp.")

    class Meta:
        model = SyncSession
        fields = SESSION_FIELDS


class PullSessionSerializer(PushSessionSerializer):
    preview = JSONObjectField(read_only=True, allow_null=True, help_text="The daemon's apply preview, once attached.")
    previewSignature = serializers.CharField(source="preview_signature", read_only=True, allow_null=True)
    result = JSONObjectField(read_only=True, allow_null=True, help_text="The daemon's apply result, once attached.")
    resultSignature = serializers.CharField(source="result_signature", read_only=True, allow_null=True)

    class Meta:
        model = SyncSession
        fields = SESSION_FIELDS + PULL_ONLY_FIELDS


class SyncSessionPrepareSerializer(Serializer):
    planSignature = SignatureField(help_text="Names exactly one plan: the same signature with another plan is a 409.")
    plan = SizedJSONObjectField(max_bytes_setting="ACP_MAX_PLAN_BYTES", help_text="At most ACP_MAX_PLAN_BYTES.")
    metadata = SizedJSONObjectField(required=False, help_text="Free-form metadata object.")


class PullSessionApplyPreviewSerializer(Serializer):
    preview = SizedJSONObjectField(max_bytes_setting="ACP_MAX_PLAN_BYTES")
    previewSignature = SignatureField()
    metadata = SizedJSONObjectField(required=False, help_text="Merged into the session's metadata.")


class PullSessionApplyResultSerializer(Serializer):
    result = SizedJSONObjectField(max_bytes_setting="ACP_MAX_PLAN_BYTES")
    resultSignature = SignatureField()
    metadata = SizedJSONObjectField(required=False, help_text="Merged into the session's metadata.")


def _response_serializer(name: str, key: str, session_serializer, flag: str, flag_help: str):
    return type(
        name,
        (Serializer,),
        {key: session_serializer(read_only=True), flag: serializers.BooleanField(read_only=True, help_text=flag_help)},
    )


PushSessionPrepareResponseSerializer = _response_serializer(
    "PushSessionPrepareResponseSerializer",
    "pushSession",
    PushSessionSerializer,
    "created",
    "false when an identical prepared session was reused.",
)
PullSessionPrepareResponseSerializer = _response_serializer(
    "PullSessionPrepareResponseSerializer",
    "pullSession",
    PullSessionSerializer,
    "created",
    "false when an identical prepared session was reused.",
)
PullSessionApplyResponseSerializer = _response_serializer(
    "PullSessionApplyResponseSerializer",
    "pullSession",
    PullSessionSerializer,
    "updated",
    "false when the same signature was already attached.",
)
