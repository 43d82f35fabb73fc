"""The registry endpoints: /v1/projects, /v1/environments, /v1/devices."""

import logging

from django.db import connection
from django.http import JsonResponse
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.response import Response

from acp import services
from acp.api.registry_serializers import (
    DeviceHeartbeatSerializer,
    DeviceSerializer,
    EnvironmentSerializer,
    ProjectSerializer,
)
from acp.api.schema import envelope_serializer
from acp.api.viewsets import OwnedModelViewSet
from acp.filtersets import DeviceFilterSet
from acp.models import Device, Environment, Project

logger = logging.getLogger(__name__)


class ProjectViewSet(OwnedModelViewSet):
    queryset = Project.objects.all()
    serializer_class = ProjectSerializer
    envelope_key = "project"


class EnvironmentViewSet(OwnedModelViewSet):
    queryset = Environment.objects.all()
    serializer_class = EnvironmentSerializer
    envelope_key = "environment"


class DeviceViewSet(OwnedModelViewSet):
    queryset = Device.objects.all()
    serializer_class = DeviceSerializer
    filterset_class = DeviceFilterSet
    envelope_key = "device"
    device_field = "id"
    device_token_actions = ("list", "retrieve", "heartbeat")
    daemon_actions = ("heartbeat",)

    @extend_schema(request=DeviceHeartbeatSerializer, responses=envelope_serializer("device", DeviceSerializer))
    @action(detail=True, methods=["post"])
    def heartbeat(self, request, pk=None):
        device = self.get_object()
        payload = DeviceHeartbeatSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        services.device_heartbeat(device=device, **payload.validated_data)
        return Response(self.wrap(DeviceSerializer(device, context=self.get_serializer_context()).data))


def healthz(request):
    """Liveness and database reachability, without auth."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:  # any database failure means "not healthy", never a 500 page
        logger.exception("healthz: database check failed")
        return JsonResponse({"status": "error", "database": "unreachable"}, status=503)
    return JsonResponse({"status": "ok", "database": "ok"})
