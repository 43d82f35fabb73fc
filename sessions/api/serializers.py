"""Wire format of workspaces and launches (the `/api/v1` family: snake_case, single objects bare)."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from acp.api.serializers import (
    JSONObjectField,
    ModelSerializer,
    OwnedPrimaryKeyRelatedField,
    Serializer,
    StrictCharField,
)
from acp.models import Device, Project
from commands.models import Thread
from sessions import services
from sessions.choices import AckStatus, CodeMode, LaunchStatus, Thinking
from sessions.models import Launch, Workspace


class WorkspaceSerializer(ModelSerializer):
    name = StrictCharField(max_length=200, trim_whitespace=True)
    project_id = OwnedPrimaryKeyRelatedField(
        source="project", queryset=Project.objects.all(), allow_null=True, required=False
    )
    default_machine_id = OwnedPrimaryKeyRelatedField(
        source="default_machine",
        queryset=Device.objects.all(),
        allow_null=True,
        required=False,
        help_text="The machine (device) launches go to when they name none.",
    )

    class Meta:
        model = Workspace
        fields = ["id", "name", "project_id", "default_machine_id", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]

    def create(self, validated_data):
        return services.workspace_create(**validated_data)

    def update(self, instance, validated_data):
        return services.workspace_update(workspace=instance, **validated_data)


# --- session_settings: the known parts are validated, anything else is kept as sent -----------------


class ClaudeCodeSettingsSerializer(Serializer):
    model = StrictCharField(max_length=200, required=False, allow_null=True, help_text="e.g. haiku")


class CodexSettingsSerializer(Serializer):
    model = StrictCharField(max_length=200, required=False, allow_null=True, help_text="e.g. gpt-5.1-codex-max")
    thinking = serializers.ChoiceField(choices=Thinking.choices, required=False, allow_null=True)


class ProvidersSerializer(Serializer):
    """Known providers are validated; other provider keys are allowed, and must be objects."""

    claude_code = ClaudeCodeSettingsSerializer(required=False)
    codex = CodexSettingsSerializer(required=False)

    def to_internal_value(self, data):
        validated = super().to_internal_value(data)
        extra = {key: value for key, value in data.items() if key not in self.fields}
        errors = {key: ["Must be a JSON object."] for key, value in extra.items() if not isinstance(value, dict)}
        if errors:
            raise serializers.ValidationError(errors)
        return {**validated, **extra}


class CodeSettingsSerializer(Serializer):
    mode = serializers.ChoiceField(choices=CodeMode.choices, required=False, allow_null=True)
    default_provider = StrictCharField(
        max_length=100, required=False, allow_null=True, help_text="Must be a key of `code.providers`."
    )
    providers = ProvidersSerializer(required=False)

    def validate(self, attrs):
        default_provider = attrs.get("default_provider")
        if default_provider is not None and default_provider not in attrs.get("providers", {}):
            raise serializers.ValidationError({"default_provider": ["Must be a key of code.providers."]})
        return attrs


class VoiceSettingsSerializer(Serializer):
    language = StrictCharField(max_length=64, required=False, allow_null=True)


class SessionSettingsSerializer(Serializer):
    code = CodeSettingsSerializer(required=False)
    voice = VoiceSettingsSerializer(required=False)


@extend_schema_field(SessionSettingsSerializer)
class SessionSettingsField(JSONObjectField):
    """Validated by `SessionSettingsSerializer`, stored exactly as sent (unknown keys kept)."""

    def to_internal_value(self, data):
        data = super().to_internal_value(data)
        settings = SessionSettingsSerializer(data=data)
        if not settings.is_valid():
            raise serializers.ValidationError(settings.errors)
        return data


# --- launching ----------------------------------------------------------------------------------------


class LaunchRequestSerializer(Serializer):
    """Request body used to start a session for a workspace (every field optional)."""

    machine_id = OwnedPrimaryKeyRelatedField(
        queryset=Device.objects.all(),
        allow_null=True,
        required=False,
        help_text="Machine ID to launch the session on. If not provided, uses the workspace's default machine.",
    )
    user_session_id = OwnedPrimaryKeyRelatedField(
        queryset=Thread.objects.all(),
        allow_null=True,
        required=False,
        help_text="Existing user session (a thread of the caller) to reuse.",
    )
    metadata = JSONObjectField(required=False, help_text="Arbitrary metadata describing the launch.")
    initial_prompt = StrictCharField(
        required=False, allow_null=True, allow_blank=True, help_text="Prompt delivered to the coding agent at startup."
    )
    worktree_name = StrictCharField(
        max_length=255,
        required=False,
        allow_null=True,
        allow_blank=True,
        help_text="Name for the git worktree/branch to use for this session.",
    )
    session_settings = SessionSettingsField(
        required=False, help_text="Optional session settings overrides for this launch."
    )
    resume_session_id = StrictCharField(
        max_length=255,
        required=False,
        allow_null=True,
        allow_blank=True,
        help_text="SDK session ID to resume from (e.g., from Claude CLI import).",
    )
    agent_session_id = StrictCharField(
        max_length=255,
        required=False,
        allow_null=True,
        allow_blank=True,
        help_text="Existing agent session ID to connect to (e.g., from import).",
    )

    def validate(self, attrs):
        workspace = self.context["workspace"]
        machine = attrs.get("machine_id") or workspace.default_machine
        if machine is None:
            raise serializers.ValidationError(
                {"machine_id": ["No machine_id given and the workspace has no default machine."]}
            )
        attrs["machine_id"] = machine
        return attrs


class LaunchAnswerSerializer(Serializer):
    """Daemon acknowledgement returned after a launch request."""

    status = serializers.CharField(help_text="Launch status: 'ok' or 'error'.")
    payload = serializers.DictField(
        help_text=(
            "On 'ok': the daemon's payload plus launch_id, thread_id, local_session_id. On 'error': `code` "
            "(machine_offline, daemon_timeout, or the daemon's own) and launch_id."
        )
    )


class LaunchSerializer(ModelSerializer):
    """A launch, with its request and its outcome."""

    workspace_id = serializers.UUIDField(read_only=True)
    machine_id = serializers.UUIDField(read_only=True)
    user_session_id = serializers.UUIDField(read_only=True, allow_null=True)
    thread_id = serializers.UUIDField(read_only=True, allow_null=True)
    local_session_id = serializers.UUIDField(read_only=True, allow_null=True)
    status = serializers.ChoiceField(choices=LaunchStatus.choices, read_only=True)
    ack_status = serializers.ChoiceField(choices=AckStatus.choices, read_only=True, allow_null=True)
    metadata = serializers.JSONField(read_only=True)
    session_settings = serializers.JSONField(read_only=True, allow_null=True)
    ack_payload = serializers.JSONField(read_only=True, allow_null=True)

    class Meta:
        model = Launch
        fields = [
            "id",
            "workspace_id",
            "machine_id",
            "user_session_id",
            "status",
            "metadata",
            "initial_prompt",
            "worktree_name",
            "session_settings",
            "resume_session_id",
            "agent_session_id",
            "error_code",
            "ack_status",
            "ack_payload",
            "thread_id",
            "local_session_id",
            "expires_at",
            "acknowledged_at",
            "timed_out_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class LaunchAckSerializer(Serializer):
    status = serializers.ChoiceField(choices=AckStatus.choices, help_text="'ok': the agent runs; 'error': it did not.")
    payload = JSONObjectField(required=False, allow_null=True, help_text="Details (e.g. pid, or an error code).")


class LaunchQueueSerializer(Serializer):
    """The daemon's fetch: the list envelope of pending launches, oldest first."""

    object = serializers.ChoiceField(choices=["list"])
    data = LaunchSerializer(many=True)
    total_count = serializers.IntegerField(min_value=0)
    has_more = serializers.BooleanField()
