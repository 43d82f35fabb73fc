"""/v1/workspace-bindings and their push and pull sessions."""

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.response import Response

from acp.api.idempotency import idempotent
from acp.api.permissions import token_device_id
from acp.api.schema import envelope_serializer
from acp.api.serializers import ErrorSerializer
from acp.api.viewsets import OwnedModelViewSet, OwnedViewSetMixin
from bindings import selectors, services
from bindings.api.serializers import (
    DEVICE_WRITABLE_BINDING_FIELDS,
    PullSessionApplyPreviewSerializer,
    PullSessionApplyResponseSerializer,
    PullSessionApplyResultSerializer,
    PullSessionPrepareResponseSerializer,
    PullSessionSerializer,
    PushSessionPrepareResponseSerializer,
    PushSessionSerializer,
    SyncSessionPrepareSerializer,
    WorkspaceBindingSerializer,
)
from bindings.choices import SyncDirection
from bindings.filtersets import SyncSessionFilterSet, WorkspaceBindingFilterSet
from bindings.models import SyncSession, WorkspaceBinding


class WorkspaceBindingViewSet(OwnedModelViewSet):
    queryset = WorkspaceBinding.objects.all()
    serializer_class = WorkspaceBindingSerializer
    filterset_class = WorkspaceBindingFilterSet
    envelope_key = "binding"
    device_field = "device"
    # A daemon reads its own device's bindings and records its sync progress; it never creates or deletes them.
    device_token_actions = ("list", "retrieve", "partial_update")

    def partial_update(self, request, *args, **kwargs):
        if token_device_id(request) is not None and isinstance(request.data, dict):
            refused = sorted(set(request.data) - DEVICE_WRITABLE_BINDING_FIELDS)
            if refused:
                raise PermissionDenied(
                    "A device token may only change lastPushedSnapshotId and lastPulledSnapshotId, "
                    f"not {', '.join(refused)}."
                )
        return super().partial_update(request, *args, **kwargs)


CONFLICT_409 = OpenApiResponse(ErrorSerializer, "The signature names another plan (conflict).")
STATE_409 = OpenApiResponse(ErrorSerializer, "The session is not in a state that allows this (conflict).")


class SyncSessionViewSet(OwnedViewSetMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """The push or pull sessions of one binding: `/v1/workspace-bindings/{bindingId}/<direction>-sessions`."""

    direction: SyncDirection
    queryset = SyncSession.objects.all()
    filterset_class = SyncSessionFilterSet
    device_field = "workspace_binding__device"
    # Pushing and pulling is the daemon's sync work for its own device.
    device_token_actions = ("list", "retrieve", "create", "cancel", "apply_preview", "apply_result")
    http_method_names = ["get", "post", "head", "options"]

    def get_queryset(self):
        return super().get_queryset().filter(workspace_binding_id=self.kwargs["bindingId"], direction=self.direction)

    def list(self, request, *args, **kwargs):
        response = super().list(request, *args, **kwargs)
        # An empty page is the only case where the binding's existence is not already proven by its rows.
        if response.data["total_count"] == 0:
            self._require_binding()
        return response

    @idempotent
    def create(self, request, *args, **kwargs):
        payload = SyncSessionPrepareSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        prepared = services.sync_session_prepare(
            user=request.user,
            device_id=token_device_id(request),
            binding_id=self.kwargs["bindingId"],
            direction=self.direction,
            plan_signature=data["planSignature"],
            plan=data["plan"],
            metadata=data.get("metadata"),
        )
        body = {**self.wrap(self.get_serializer(prepared.obj).data), "created": prepared.changed}
        return Response(body, status=status.HTTP_201_CREATED if prepared.changed else status.HTTP_200_OK)

    @action(detail=True, methods=["post"])
    def cancel(self, request, *args, **kwargs):
        cancelled = services.sync_session_cancel(session=self.get_object())
        return Response(self.wrap(self.get_serializer(cancelled.obj).data))

    def _require_binding(self):
        visible = selectors.binding_is_visible(
            user=self.request.user, binding_id=self.kwargs["bindingId"], device_id=token_device_id(self.request)
        )
        if not visible:
            raise NotFound()


def _session_schema(key: str, session_serializer, prepare_response, direction: str):
    return {
        "list": extend_schema(summary=f"List workspace {direction} sessions", description="Newest first."),
        "retrieve": extend_schema(summary=f"Get a workspace {direction} session"),
        "create": extend_schema(
            summary=f"Prepare workspace {direction} session",
            request=SyncSessionPrepareSerializer,
            responses={
                200: OpenApiResponse(prepare_response, f"Existing prepared workspace {direction} session reused"),
                201: OpenApiResponse(prepare_response, f"Workspace {direction} session prepared"),
                409: CONFLICT_409,
            },
        ),
        "cancel": extend_schema(
            summary=f"Cancel a prepared workspace {direction} session",
            description="prepared → cancelled; cancelling a cancelled session changes nothing; superseded → 409.",
            request=None,
            responses={200: envelope_serializer(key, session_serializer), 409: STATE_409},
        ),
    }


@extend_schema_view(
    **_session_schema("pushSession", PushSessionSerializer, PushSessionPrepareResponseSerializer, "push")
)
class PushSessionViewSet(SyncSessionViewSet):
    direction = SyncDirection.PUSH
    serializer_class = PushSessionSerializer
    envelope_key = "pushSession"
    device_token_actions = ("list", "retrieve", "create", "cancel")


@extend_schema_view(
    **_session_schema("pullSession", PullSessionSerializer, PullSessionPrepareResponseSerializer, "pull"),
    apply_preview=extend_schema(
        summary="Attach the apply preview to a prepared pull session",
        request=PullSessionApplyPreviewSerializer,
        responses={200: PullSessionApplyResponseSerializer, 409: STATE_409},
    ),
    apply_result=extend_schema(
        summary="Attach the apply result to a prepared pull session",
        request=PullSessionApplyResultSerializer,
        responses={200: PullSessionApplyResponseSerializer, 409: STATE_409},
    ),
)
class PullSessionViewSet(SyncSessionViewSet):
    direction = SyncDirection.PULL
    serializer_class = PullSessionSerializer
    envelope_key = "pullSession"

    @action(detail=True, methods=["post"], url_path="apply-preview")
    def apply_preview(self, request, *args, **kwargs):
        return self._apply(
            PullSessionApplyPreviewSerializer,
            lambda session, data: services.pull_session_apply_preview(
                session=session,
                preview=data["preview"],
                preview_signature=data["previewSignature"],
                metadata=data.get("metadata"),
            ),
        )

    @action(detail=True, methods=["post"], url_path="apply-result")
    def apply_result(self, request, *args, **kwargs):
        return self._apply(
            PullSessionApplyResultSerializer,
            lambda session, data: services.pull_session_apply_result(
                session=session,
                result=data["result"],
                result_signature=data["resultSignature"],
                metadata=data.get("metadata"),
            ),
        )

    def _apply(self, payload_serializer, apply):
        session = self.get_object()
        payload = payload_serializer(data=self.request.data)
        payload.is_valid(raise_exception=True)
        applied = apply(session, payload.validated_data)
        return Response({**self.wrap(self.get_serializer(applied.obj).data), "updated": applied.changed})
