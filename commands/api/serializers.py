"""Wire format of threads, local sessions and control commands (`/v1`, camelCase)."""

from django.conf import settings
from django.core.validators import RegexValidator
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer

from acp.api.registry_serializers import OwnedModelSerializer
from acp.api.serializers import (
    JSONObjectField,
    ModelSerializer,
    OwnedPrimaryKeyRelatedField,
    RejectUnknownFieldsMixin,
    Serializer,
    StrictCharField,
)
from acp.models import Device, Environment, Project
from bindings.models import WorkspaceBinding
from commands.choices import SESSION_TERMINAL_STATES, CommandStatus, CommandType, EventSource, SessionStatus
from commands.models import ControlCommand, LocalSession, Thread, ThreadEvent
from commands.services import NewEvent


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


class ThreadUpdateSerializer(RejectUnknownFieldsMixin, Serializer):
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


class LocalSessionCreateSerializer(Serializer):
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


class LocalSessionHeartbeatSerializer(Serializer):
    metadata = JSONObjectField(required=False)
    error = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=65536)


class LocalSessionCompleteSerializer(Serializer):
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


class ControlCommandCreateSerializer(Serializer):
    commandType = serializers.ChoiceField(source="command_type", choices=CommandType.choices)
    payload = JSONObjectField(required=False, default=dict)


class ControlCommandAckSerializer(Serializer):
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


# --- thread events -----------------------------------------------------------------------------------------------


class ThreadEventSerializer(ModelSerializer):
    threadId = _uuid("thread_id")
    sessionId = _uuid("session_id", allow_null=True)
    sequence = serializers.IntegerField(read_only=True, help_text="1, 2, 3… per thread, with no gap.")
    type = serializers.CharField(read_only=True)
    source = serializers.ChoiceField(choices=EventSource.choices, read_only=True)
    data = JSONObjectField(read_only=True)
    clientEventId = serializers.CharField(source="client_event_id", read_only=True, allow_null=True)
    occurredAt = serializers.DateTimeField(source="occurred_at", read_only=True, allow_null=True)
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)

    class Meta:
        model = ThreadEvent
        fields = [
            "id", "threadId", "sessionId", "sequence", "type", "source", "data", "clientEventId", "occurredAt",
            "createdAt",
        ]  # fmt: skip


EVENT_TYPE = RegexValidator(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", "Letters, digits and _ . : - only.")


class IngestEventSerializer(RejectUnknownFieldsMixin, Serializer):
    type = StrictCharField(max_length=64, validators=[EVENT_TYPE])
    sessionId = serializers.UUIDField(source="session_id", required=False, allow_null=True)
    data = JSONObjectField(required=False, default=dict)
    clientEventId = StrictCharField(source="client_event_id", max_length=200, required=False, allow_null=True)
    occurredAt = serializers.DateTimeField(source="occurred_at", required=False, allow_null=True)

    def validate_data(self, value):
        size = len(JSONRenderer().render(value))
        if size > settings.ACP_EVENT_MAX_BYTES:
            raise serializers.ValidationError(
                f"{size} bytes; an event's data may have at most {settings.ACP_EVENT_MAX_BYTES}."
            )
        return value


class ThreadEventIngestSerializer(RejectUnknownFieldsMixin, Serializer):
    events = IngestEventSerializer(many=True, allow_empty=False)

    def validate_events(self, value):
        if len(value) > settings.ACP_EVENTS_PER_BATCH:
            raise serializers.ValidationError(
                f"{len(value)} events; a batch may have at most {settings.ACP_EVENTS_PER_BATCH}."
            )
        return value

    def new_events(self, source: str) -> list[NewEvent]:
        return [NewEvent(source=source, **event) for event in self.validated_data["events"]]


class ThreadEventIngestResultSerializer(Serializer):
    success = serializers.BooleanField()
    eventsProcessed = serializers.IntegerField(help_text="How many events the batch had.")
    persistedCount = serializers.IntegerField(help_text="How many were new (not already stored by clientEventId).")


EVENT_PAGE_MAX = 500


class ThreadEventParamsSerializer(Serializer):
    """The query of `GET /v1/threads/{id}/events`; unknown parameters are refused by the view."""

    after = serializers.IntegerField(min_value=0, required=False, help_text="A sequence or cursor: events after it.")
    cursor = serializers.IntegerField(min_value=0, required=False, help_text="`next_cursor` of a previous page.")
    before = serializers.IntegerField(min_value=1, required=False, help_text="Only events before this sequence.")
    limit = serializers.IntegerField(min_value=1, max_value=EVENT_PAGE_MAX, default=100)
    sessionId = serializers.UUIDField(source="session_id", required=False)
    type = serializers.CharField(required=False, help_text="One type, or several separated by commas.")
    source = serializers.ChoiceField(choices=EventSource.choices, required=False)
    stream = serializers.BooleanField(required=False, allow_null=True, default=None)

    def validate_type(self, value):
        types = [item.strip() for item in value.split(",")]
        if not all(types):
            raise serializers.ValidationError("An empty type.")
        return types

    def validate(self, attrs):
        if "after" in attrs and "cursor" in attrs:
            raise serializers.ValidationError({"cursor": ["Give after or cursor, not both."]})
        attrs["after"] = attrs.pop("cursor", attrs.get("after", 0))
        return attrs
