"""/v1/local-runner-pairing-tokens and /v1/api-keys: a person pairs their machines and manages their own keys."""

from datetime import timedelta

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from acp import domain, services
from acp.api.credential_serializers import (
    ApiKeyCreateSerializer,
    ApiKeySerializer,
    IssuedApiKeySerializer,
    IssuedPairingTokenSerializer,
    PairingExchangeResultSerializer,
    PairingExchangeSerializer,
    PairingTokenCreateSerializer,
    PairingTokenSerializer,
)
from acp.api.idempotency import idempotent
from acp.api.registry_serializers import DeviceSerializer
from acp.api.schema import envelope_serializer
from acp.api.serializers import ErrorSerializer
from acp.api.viewsets import OwnedViewSetMixin
from acp.models import ApiToken, PairingToken
from acp.selectors import pairing_retry_after


class PairingTokenViewSet(OwnedViewSetMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """One-time codes a machine trades for its device key (`exchange`, the one endpoint without a bearer key)."""

    queryset = PairingToken.objects.all()
    serializer_class = PairingTokenSerializer
    envelope_key = "pairingToken"
    http_method_names = ["get", "post", "head", "options"]

    @extend_schema(request=PairingTokenCreateSerializer, responses={201: IssuedPairingTokenSerializer})
    @idempotent(sealed=True)
    def create(self, request, *args, **kwargs):
        payload = PairingTokenCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        ttl_seconds = payload.validated_data.get("ttl_seconds")
        issued = services.pairing_token_create(
            user=request.user,
            name=payload.validated_data["name"],
            ttl=timedelta(seconds=ttl_seconds) if ttl_seconds else None,
        )
        body = {"pairingToken": self.get_serializer(issued.pairing_token).data, "token": issued.raw}
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=envelope_serializer("pairingToken", PairingTokenSerializer))
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        """pending → revoked (a repeat changes nothing); an exchanged token → 409: revoke its key instead."""
        outcome = services.pairing_token_revoke(pairing_token=self.get_object())
        return Response(self.wrap(self.get_serializer(outcome.obj).data))

    @extend_schema(
        summary="Exchange a pairing token for a device and its key (no authentication)",
        request=PairingExchangeSerializer,
        responses={
            200: PairingExchangeResultSerializer,
            401: OpenApiResponse(ErrorSerializer, "Unknown pairing token (counts against the caller's address)."),
            409: OpenApiResponse(ErrorSerializer, "The pairing token was already exchanged."),
            410: OpenApiResponse(ErrorSerializer, "The pairing token expired or was revoked."),
            429: OpenApiResponse(ErrorSerializer, "Too many unknown pairing tokens from this address (Retry-After)."),
        },
        description="Unauthenticated: the pairing token in the body is the credential. Registers the device (or "
        "re-pairs the caller's device with the same name and hostname, revoking its earlier paired keys), mints its "
        "device key (shown only here) and completes the pairing token, exactly once.",
    )
    @action(detail=False, methods=["post"], authentication_classes=[], permission_classes=[AllowAny])
    def exchange(self, request):
        address = request.META.get("REMOTE_ADDR") or "unknown"
        retry_after = pairing_retry_after(address)
        if retry_after is not None:
            raise exceptions.Throttled(wait=retry_after, detail="Too many failed pairing attempts from this address.")
        payload = PairingExchangeSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        pairing = services.pairing_token_exchange(
            raw=payload.validated_data["token"], address=address, device_fields=payload.validated_data["device_fields"]
        )
        context = self.get_serializer_context()
        return Response(
            {
                "device": DeviceSerializer(pairing.device, context=context).data,
                "apiKey": pairing.key.raw,
                "apiKeyPrefix": pairing.key.token.key_prefix,
                "pairingToken": PairingTokenSerializer(pairing.pairing_token, context=context).data,
            }
        )


class ApiKeyViewSet(OwnedViewSetMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """The caller's API keys, user and device kind; secrets are never shown again after creation."""

    queryset = ApiToken.objects.all()
    serializer_class = ApiKeySerializer
    envelope_key = "apiKey"
    http_method_names = ["get", "post", "head", "options"]

    @extend_schema(request=ApiKeyCreateSerializer, responses={201: IssuedApiKeySerializer})
    @idempotent(sealed=True)
    def create(self, request, *args, **kwargs):
        payload = ApiKeyCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        days = payload.validated_data.get("expires_in_days")
        issued = services.token_create(
            user=request.user,
            name=payload.validated_data["name"],
            scopes=payload.validated_data["scopes"],
            expires_in=timedelta(days=days) if days else None,
        )
        body = {"apiKey": self.get_serializer(issued.token).data, "key": issued.raw}
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=envelope_serializer("apiKey", ApiKeySerializer))
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        """Revoked at once on every server process (each request looks its key up); a repeat changes nothing."""
        token = self.get_object()
        services.token_revoke(token=token)
        return Response(self.wrap(self.get_serializer(token).data))

    @extend_schema(
        summary="Reveal an API key's secret (always refused: 410)",
        request=None,
        responses={410: OpenApiResponse(ErrorSerializer, "Keys are stored hashed: a secret is shown only once.")},
    )
    @action(detail=True, methods=["get"])
    def reveal(self, request, pk=None):
        self.get_object()  # another user's key or a missing one: 404
        raise domain.Gone(
            "API keys are stored only as hashes and cannot be shown again; create a new key and revoke this one."
        )
