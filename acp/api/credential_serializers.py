"""Wire format of pairing tokens and API keys (`/v1`, camelCase). Secrets appear only in creation answers."""

from django.conf import settings
from rest_framework import serializers

from acp.api.registry_serializers import DeviceSerializer
from acp.api.serializers import JSONObjectField, ModelSerializer, Serializer
from acp.choices import FULL_SCOPES, ApiTokenKind, PairingTokenStatus, Scope
from acp.models import ApiToken, PairingToken

MAX_KEY_LIFETIME_DAYS = 3650
MIN_PAIRING_TTL = 30


class PairingTokenSerializer(ModelSerializer):
    userId = serializers.UUIDField(source="user_id", read_only=True, format="hex_verbose")
    tokenPrefix = serializers.CharField(source="token_prefix", read_only=True)
    status = serializers.SerializerMethodField()
    deviceId = serializers.UUIDField(source="device_id", read_only=True, allow_null=True, format="hex_verbose")
    expiresAt = serializers.DateTimeField(source="expires_at", read_only=True)
    completedAt = serializers.DateTimeField(source="completed_at", read_only=True, allow_null=True)
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    updatedAt = serializers.DateTimeField(source="updated_at", read_only=True)

    class Meta:
        model = PairingToken
        fields = [
            "id", "userId", "tokenPrefix", "name", "status", "deviceId",
            "expiresAt", "completedAt", "createdAt", "updatedAt",
        ]  # fmt: skip
        read_only_fields = fields

    def get_status(self, obj) -> PairingTokenStatus:
        return obj.current_status()


class PairingTokenCreateSerializer(Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    ttlSeconds = serializers.IntegerField(
        source="ttl_seconds",
        required=False,
        min_value=MIN_PAIRING_TTL,
        help_text="How long the token may be exchanged, seconds (default ACP_PAIRING_TOKEN_TTL, 600; at most "
        "ACP_PAIRING_TOKEN_MAX_TTL, 3600).",
    )

    def validate_ttlSeconds(self, value):
        if value > settings.ACP_PAIRING_TOKEN_MAX_TTL:
            raise serializers.ValidationError(f"Ensure this value is at most {settings.ACP_PAIRING_TOKEN_MAX_TTL}.")
        return value


class IssuedPairingTokenSerializer(Serializer):
    pairingToken = PairingTokenSerializer(read_only=True)
    token = serializers.CharField(read_only=True, help_text="The pairing token itself: shown only in this answer.")


class PairingDeviceSerializer(Serializer):
    name = serializers.CharField(max_length=200, required=False)
    platform = serializers.CharField(max_length=100, required=False, allow_blank=True)
    hostname = serializers.CharField(max_length=255, required=False, allow_blank=True)
    appVersion = serializers.CharField(source="app_version", max_length=100, required=False, allow_blank=True)
    daemonVersion = serializers.CharField(source="daemon_version", max_length=100, required=False, allow_blank=True)
    capabilities = JSONObjectField(required=False)


class PairingExchangeSerializer(Serializer):
    token = serializers.CharField(max_length=200, help_text="The pairing token (`acpp_…`).")
    device = PairingDeviceSerializer(required=False, help_text="The machine being paired.")
    name = serializers.CharField(max_length=200, required=False, help_text="The device's name without `device.name`.")
    capabilities = JSONObjectField(required=False, help_text="The device's capabilities without `device.capabilities`.")

    def validate(self, attrs):
        device = dict(attrs.get("device") or {})
        for field in ("name", "capabilities"):
            if field not in device and field in attrs:
                device[field] = attrs[field]
        if not device.get("name"):
            raise serializers.ValidationError({"device": {"name": ["This field is required (or a top-level name)."]}})
        return {"token": attrs["token"], "device_fields": device}


class PairingExchangeResultSerializer(Serializer):
    device = DeviceSerializer(read_only=True)
    apiKey = serializers.CharField(read_only=True, help_text="The device's new key: shown only in this answer.")
    apiKeyPrefix = serializers.CharField(read_only=True)
    pairingToken = PairingTokenSerializer(read_only=True)


class ApiKeySerializer(ModelSerializer):
    prefix = serializers.CharField(source="key_prefix", read_only=True)
    kind = serializers.ChoiceField(choices=ApiTokenKind.choices, read_only=True)
    deviceId = serializers.UUIDField(source="device_id", read_only=True, allow_null=True, format="hex_verbose")
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=Scope.choices), read_only=True)
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    lastUsedAt = serializers.DateTimeField(source="last_used_at", read_only=True, allow_null=True)
    expiresAt = serializers.DateTimeField(source="expires_at", read_only=True, allow_null=True)
    revokedAt = serializers.DateTimeField(source="revoked_at", read_only=True, allow_null=True)

    class Meta:
        model = ApiToken
        fields = [
            "id", "name", "prefix", "kind", "deviceId", "scopes",
            "createdAt", "lastUsedAt", "expiresAt", "revokedAt",
        ]  # fmt: skip
        read_only_fields = fields


class ApiKeyCreateSerializer(Serializer):
    name = serializers.CharField(max_length=200)
    expiresInDays = serializers.IntegerField(
        source="expires_in_days", required=False, min_value=1, max_value=MAX_KEY_LIFETIME_DAYS
    )
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=Scope.choices),
        required=False,
        min_length=1,
        default=lambda: list(FULL_SCOPES),
        help_text='`["read"]`: read-only (GET only; any write answers 403); `["read", "write"]` (the default): full.',
    )


class IssuedApiKeySerializer(Serializer):
    apiKey = ApiKeySerializer(read_only=True)
    key = serializers.CharField(read_only=True, help_text="The key itself: shown only in this answer.")
