"""The registry endpoints: /v1/projects, /v1/environments, /v1/devices."""

import logging
import time

from django.db import connection
from django.http import JsonResponse
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.response import Response

from acp import services
from acp.api.errors import ServiceUnavailable
from acp.api.idempotency import idempotent
from acp.api.query_params import refuse_unknown_query_params
from acp.api.registry_serializers import (
    DeviceHeartbeatSerializer,
    DeviceSerializer,
    EnvironmentSerializer,
    ProjectSerializer,
)
from acp.api.schema import envelope_serializer
from acp.api.viewsets import OwnedModelViewSet
from acp.filtersets import DeviceFilterSet, ProjectFilterSet
from acp.models import Device, Environment, Project
from acp.realtime import get_listener

logger = logging.getLogger(__name__)


class ProjectViewSet(OwnedModelViewSet):
    queryset = Project.objects.all()
    serializer_class = ProjectSerializer
    filterset_class = ProjectFilterSet
    envelope_key = "project"
    returns_whole_list = True


EnvironmentEnvelope = envelope_serializer("environment", EnvironmentSerializer)


class EnvironmentViewSet(OwnedModelViewSet):
    """Remote computers. Each user has at most one default (`isDefault`); the first one created becomes it."""

    queryset = Environment.objects.all()
    serializer_class = EnvironmentSerializer
    envelope_key = "environment"
    returns_whole_list = True

    @idempotent
    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        environment = services.environment_create(user=request.user, **serializer.validated_data)
        return Response(self.wrap(self.get_serializer(environment).data), status=status.HTTP_201_CREATED)

    def partial_update(self, request, *args, **kwargs):
        serializer = self.get_serializer(self.get_object(), data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        environment = services.environment_update(environment=serializer.instance, **serializer.validated_data)
        return Response(self.wrap(self.get_serializer(environment).data))

    @extend_schema(description="When it was the default, the oldest remaining environment becomes the default.")
    def destroy(self, request, *args, **kwargs):
        services.environment_delete(environment=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Get the default environment",
        description='A user without one gets a new environment named "default" (201).',
        responses={200: EnvironmentEnvelope, 201: EnvironmentEnvelope},
    )
    @action(detail=False, methods=["get"])
    def default(self, request):
        refuse_unknown_query_params(request, self, allowed=())
        outcome = services.environment_default(user=request.user)
        code = status.HTTP_201_CREATED if outcome.changed else status.HTTP_200_OK
        return Response(self.wrap(self.get_serializer(outcome.obj).data), status=code)

    @extend_schema(
        summary="Make an environment the default",
        request=None,
        responses={200: EnvironmentEnvelope},
    )
    @action(detail=True, methods=["post"], url_path="set-default")
    def set_default(self, request, pk=None):
        outcome = services.environment_set_default(environment=self.get_object())
        return Response(self.wrap(self.get_serializer(outcome.obj).data))


class DeviceViewSet(OwnedModelViewSet):
    queryset = Device.objects.all()
    serializer_class = DeviceSerializer
    filterset_class = DeviceFilterSet
    envelope_key = "device"
    device_field = "id"
    device_token_actions = ("list", "retrieve", "heartbeat")
    daemon_actions = ("heartbeat",)

    @extend_schema(
        summary="Record a heartbeat of a device",
        request=DeviceHeartbeatSerializer,
        responses=envelope_serializer("device", DeviceSerializer),
    )
    @action(detail=True, methods=["post"])
    def heartbeat(self, request, pk=None):
        device = self.get_object()
        payload = DeviceHeartbeatSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        services.device_heartbeat(device=device, **payload.validated_data)
        return Response(self.wrap(DeviceSerializer(device, context=self.get_serializer_context()).data))

    def destroy(self, request, *args, **kwargs):
        """Deleting a device revokes its keys: they answer 401 from the next request on."""
        services.device_delete(device=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


_STARTED = time.monotonic()


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any database failure means "not ready", never a 500 page
        logger.warning("database check failed: %s", exc)
        return False
    return True


def _unavailable(body: dict) -> JsonResponse:
    response = JsonResponse(body, status=503)
    response["Retry-After"] = str(ServiceUnavailable.wait)
    return response


def health(request):
    """`GET /v1/health`, the SDK's `client.health()`: the process answers (liveness; no database)."""
    return JsonResponse(
        {
            "status": "healthy",
            "timestamp": timezone.now().isoformat(),
            "uptime": int(time.monotonic() - _STARTED),
            "checks": {"process": "ok"},
        }
    )


def ready(request):
    """`GET /v1/ready`, the SDK's `client.ready()`: 200 when the database answers, else 503."""
    if not _database_ok():
        return _unavailable({"status": "not_ready", "checks": {"database": "unreachable"}})
    return JsonResponse({"status": "ready", "checks": {"database": "ok"}})


def healthz(request):
    """Liveness and database reachability, without auth; the long-polls' listener as detail.

    The listener does not make the process unhealthy: while it reconnects, waiters re-check on a short timer.
    """
    detail = {"listener": get_listener().state()}
    if not _database_ok():
        return _unavailable({"status": "error", "database": "unreachable", **detail})
    return JsonResponse({"status": "ok", "database": "ok", **detail})
