"""Wire format of threads, local sessions and control commands (`/v1`, camelCase)."""

from rest_framework import serializers

from acp.api.registry_serializers import OwnedModelSerializer
from acp.api.serializers import JSONObjectField, OwnedPrimaryKeyRelatedField, RejectUnknownFieldsMixin
from acp.models import Device, Environment, Project
from bindings.models import WorkspaceBinding
from commands.choices import SESSION_TERMINAL_STATES, CommandStatus, CommandType, SessionStatus
from commands.models import ControlCommand, LocalSession, Thread


def _uuid(source: str, **kwargs):
    return serializers.UUIDField(source=source, read_only=True, format="hex_verbose", **kwargs)


NOT_AN_AGENT_RUNNER = (
    "ACP does not run cloud agents, so a thread cannot be created or changed with work to run: create the thread,"
    " then launch an agent on a machine (POST /api/v1/workspaces/{workspace_id}/sessions)."
)


class ThreadSerializer(RejectUnknownFieldsMixin, OwnedModelSerializer):
    """A thread; on create, a field ACP cannot act on (`content`, `messages`, `task`, `agentId`, …) is refused."""

    unknown_field_message = NOT_AN_AGENT_RUNNER

    environmentId = OwnedPrimaryKeyRelatedField(
        source="environment", queryset=Environment.objects.all(), required=False, allow_null=True
    )
    projectId = OwnedPrimaryKeyRelatedField(
        source="project", queryset=Project.objects.all(), required=False, allow_null=True
    )
    title = serializers.CharField(max_length=500, required=False, allow_blank=True)
    status = serializers.ChoiceField(choices=Thread._meta.get_field("status").choices, read_only=True)
    metadata = JSONObjectField(required=False)

    class Meta:
        model = Thread
        fields = [
            "id",
            "userId",
            "environmentId",
            "projectId",
            "title",
            "status",
            "metadata",
            "createdAt",
            "updatedAt",
        ]


class ThreadUpdateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    unknown_field_message = NOT_AN_AGENT_RUNNER
    unknown_field_messages = {"environmentId": "A thread's environment is set when it is created."}

    title = serializers.CharField(max_length=500, required=False, allow_blank=True)
    metadata = JSONObjectField(required=False)
    status = serializers.ChoiceField(
        choices=Thread._meta.get_field("status").choices,
        required=False,
        help_text="active ↔ running, or ended (completed, failed, cancelled: final, and not while a session runs).",
    )
    projectId = OwnedPrimaryKeyRelatedField(
        source="project", queryset=Project.objects.all(), required=False, allow_null=True
    )


class LocalSessionSerializer(OwnedModelSerializer):
    threadId = _uuid("thread_id")
    deviceId = _uuid("device_id")
    workspaceBindingId = _uuid("workspace_binding_id", allow_null=True)
    environmentId = _uuid("environment_id", allow_null=True)
    status = serializers.ChoiceField(choices=SessionStatus.choices, read_only=True)
    metadata = JSONObjectField(read_only=True)
    error = serializers.CharField(read_only=True, allow_null=True)
    startedAt = serializers.DateTimeField(source="started_at", read_only=True, allow_null=True)
    lastHeartbeatAt = serializers.DateTimeField(source="last_heartbeat_at", read_only=True, allow_null=True)
    completedAt = serializers.DateTimeField(source="completed_at", read_only=True, allow_null=True)
    pausedAt = serializers.DateTimeField(
        source="paused_at",
        read_only=True,
        allow_null=True,
        help_text="When the session was paused; null unless paused.",
    )

    class Meta:
        model = LocalSession
        fields = [
            "id",
            "threadId",
            "userId",
            "deviceId",
            "workspaceBindingId",
            "environmentId",
            "status",
            "metadata",
            "error",
            "startedAt",
            "lastHeartbeatAt",
            "completedAt",
            "createdAt",
            "updatedAt",
            "pausedAt",
        ]


class DeviceField(OwnedPrimaryKeyRelatedField):
    """The caller's device; a device token may only name its own."""

    def get_queryset(self):
        queryset = super().get_queryset()
        device_id = getattr(self.context["request"].auth, "device_id", None)
        return queryset if device_id is None else queryset.filter(pk=device_id)


class LocalSessionCreateSerializer(serializers.Serializer):
    deviceId = DeviceField(source="device", queryset=Device.objects.all())
    workspaceBindingId = OwnedPrimaryKeyRelatedField(
        source="workspace_binding", queryset=WorkspaceBinding.objects.all(), required=False, allow_null=True
    )
    status = serializers.ChoiceField(
        choices=[SessionStatus.CREATED, SessionStatus.RUNNING], default=SessionStatus.CREATED
    )
    startedAt = serializers.DateTimeField(source="started_at", required=False, allow_null=True)
    metadata = JSONObjectField(required=False)

    def validate(self, attrs):
        binding = attrs.get("workspace_binding")
        if binding is not None and binding.device_id != attrs["device"].pk:
            raise serializers.ValidationError({"workspaceBindingId": ["The binding is on another device."]})
        return attrs


class LocalSessionHeartbeatSerializer(serializers.Serializer):
    metadata = JSONObjectField(required=False)
    error = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=65536)


class LocalSessionCompleteSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=sorted(SESSION_TERMINAL_STATES), default=SessionStatus.COMPLETED)
    completedAt = serializers.DateTimeField(source="completed_at", required=False, allow_null=True)
    error = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=65536)
    metadata = JSONObjectField(required=False)


class ControlCommandSerializer(OwnedModelSerializer):
    sessionId = _uuid("session_id", help_text="Session ID.")
    threadId = _uuid("thread_id", help_text="Thread ID.")
    commandType = serializers.ChoiceField(source="command_type", choices=CommandType.choices, read_only=True)
    payload = JSONObjectField(read_only=True)
    status = serializers.ChoiceField(
        choices=CommandStatus.choices, read_only=True, help_text="Current lifecycle status."
    )
    acknowledgedAt = serializers.DateTimeField(source="acknowledged_at", read_only=True, allow_null=True)
    completedAt = serializers.DateTimeField(source="completed_at", read_only=True, allow_null=True)
    result = serializers.JSONField(read_only=True, allow_null=True, help_text="The payload of the daemon's ack.")

    class Meta:
        model = ControlCommand
        fields = [
            "id",
            "sessionId",
            "threadId",
            "userId",
            "commandType",
            "payload",
            "status",
            "createdAt",
            "acknowledgedAt",
            "completedAt",
            "updatedAt",
            "result",
        ]


class ControlCommandCreateSerializer(serializers.Serializer):
    commandType = serializers.ChoiceField(source="command_type", choices=CommandType.choices)
    payload = JSONObjectField(required=False, default=dict)



class ControlCommandAckSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=[CommandStatus.ACKNOWLEDGED, CommandStatus.COMPLETED, CommandStatus.CANCELLED],
        required=False,
        help_text="Current lifecycle status (default acknowledged).",
    )
    acknowledgedAt = serializers.DateTimeField(source="acknowledged_at", required=False, allow_null=True)
    completedAt = serializers.DateTimeField(
        source="completed_at", required=False, allow_null=True, help_text="ISO 8601 timestamp."
    )
    payload = JSONObjectField(required=False, allow_null=True, help_text="Stored as the command's `result`.")


class PollParamsSerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=100, default=50)
    wait = serializers.FloatField(min_value=0, default=0)
