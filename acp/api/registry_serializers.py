"""Wire format of the registry (`/v1`, camelCase)."""

from rest_framework import serializers

from acp.api.serializers import JSONObjectField, ModelSerializer, RejectUnknownFieldsMixin, Serializer
from acp.models import Device, Environment, Project


class OwnedModelSerializer(ModelSerializer):
    userId = serializers.UUIDField(source="user_id", read_only=True, format="hex_verbose")
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    updatedAt = serializers.DateTimeField(source="updated_at", read_only=True)


class ProjectSerializer(RejectUnknownFieldsMixin, OwnedModelSerializer):
    class Meta:
        model = Project
        fields = ["id", "userId", "name", "createdAt", "updatedAt"]


class EnvironmentSerializer(RejectUnknownFieldsMixin, OwnedModelSerializer):
    unknown_field_message = "ACP records a remote computer's name only; it does not build or configure computers."

    isDefault = serializers.BooleanField(
        source="is_default",
        required=False,
        help_text="The user's default environment (one per user; the first one created becomes it).",
    )

    class Meta:
        model = Environment
        fields = ["id", "userId", "name", "isDefault", "createdAt", "updatedAt"]


class DeviceSerializer(RejectUnknownFieldsMixin, OwnedModelSerializer):
    appVersion = serializers.CharField(source="app_version", max_length=100, required=False, allow_blank=True)
    daemonVersion = serializers.CharField(source="daemon_version", max_length=100, required=False, allow_blank=True)
    capabilities = JSONObjectField(required=False)
    status = serializers.ChoiceField(choices=["online", "offline"], read_only=True)
    lastSeenAt = serializers.DateTimeField(source="last_seen_at", read_only=True, allow_null=True)

    class Meta:
        model = Device
        fields = [
            "id",
            "userId",
            "name",
            "platform",
            "hostname",
            "appVersion",
            "daemonVersion",
            "status",
            "capabilities",
            "lastSeenAt",
            "createdAt",
            "updatedAt",
        ]


class DeviceHeartbeatSerializer(Serializer):
    appVersion = serializers.CharField(source="app_version", max_length=100, required=False, allow_blank=True)
    daemonVersion = serializers.CharField(source="daemon_version", max_length=100, required=False, allow_blank=True)
    capabilities = JSONObjectField(required=False)
    platform = serializers.CharField(max_length=100, required=False, allow_blank=True)
    hostname = serializers.CharField(max_length=255, required=False, allow_blank=True)
