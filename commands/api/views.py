"""`/v1/threads`, their local sessions and the sessions' control commands."""

from django.conf import settings
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from acp.api.idempotency import idempotent
from acp.api.pagination import list_envelope
from acp.api.permissions import token_device_id
from acp.api.query_params import refuse_unknown_query_params
from acp.api.schema import envelope_serializer
from acp.api.serializers import ErrorSerializer
from acp.api.viewsets import OwnedViewSetMixin
from acp.realtime import LongPoll
from commands import selectors, services
from commands.api.serializers import (
    ControlCommandAckSerializer,
    ControlCommandCreateSerializer,
    ControlCommandSerializer,
    LocalSessionCompleteSerializer,
    LocalSessionCreateSerializer,
    LocalSessionHeartbeatSerializer,
    LocalSessionSerializer,
    PollParamsSerializer,
    ThreadSerializer,
    ThreadUpdateSerializer,
)
from commands.filtersets import ControlCommandFilterSet, LocalSessionFilterSet, ThreadFilterSet
from commands.models import ControlCommand, LocalSession, Thread

SessionEnvelope = envelope_serializer("session", LocalSessionSerializer)
CommandEnvelope = envelope_serializer("command", ControlCommandSerializer)
ThreadEnvelope = envelope_serializer("thread", ThreadSerializer)

CONFLICT_SESSION = OpenApiResponse(ErrorSerializer, "The session has ended, or is (not) paused; `details.session`.")
SESSION_TRANSITION_CONFLICT = OpenApiResponse(
    ErrorSerializer, "`state_transition_conflict`: the session already ended otherwise; `details.session`."
)
THREAD_CONFLICT = OpenApiResponse(
    ErrorSerializer, "A move the thread's status does not allow, or a live local session; `details.thread`."
)
COMMAND_TRANSITION_CONFLICT = OpenApiResponse(
    ErrorSerializer, "`state_transition_conflict`: that move is not allowed; the current command in `details.command`."
)


@extend_schema(tags=["threads"])
class ThreadViewSet(OwnedViewSetMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Threads. A device token may read the threads that have a session on its device; creating is user work."""

    queryset = Thread.objects.all()
    serializer_class = ThreadSerializer
    filterset_class = ThreadFilterSet
    envelope_key = "thread"
    lookup_url_kwarg = "threadId"
    device_token_actions = ("list", "retrieve")
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return selectors.threads_visible(user=self.request.user, device_id=token_device_id(self.request))

    @extend_schema(responses={201: ThreadEnvelope})
    @idempotent
    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        thread = services.thread_create(user=request.user, **serializer.validated_data)
        return Response(self.wrap(self.get_serializer(thread).data), status=status.HTTP_201_CREATED)

    @extend_schema(
        request=ThreadUpdateSerializer,
        responses={200: ThreadEnvelope, 409: THREAD_CONFLICT},
        summary="Update a thread (title, metadata, project, status)",
    )
    def partial_update(self, request, *args, **kwargs):
        thread = self.get_object()
        payload = ThreadUpdateSerializer(data=request.data, context=self.get_serializer_context())
        payload.is_valid(raise_exception=True)
        outcome = services.thread_update(thread=thread, **payload.validated_data)
        return Response(self.wrap(self.get_serializer(outcome.obj).data))

    @extend_schema(responses={204: None, 409: THREAD_CONFLICT}, summary="Delete a thread and its ended sessions")
    def destroy(self, request, *args, **kwargs):
        services.thread_delete(thread=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=["local sessions"])
class LocalSessionViewSet(OwnedViewSetMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Local execution sessions of a thread. A device token works only with sessions on its own device."""

    queryset = LocalSession.objects.all()
    serializer_class = LocalSessionSerializer
    filterset_class = LocalSessionFilterSet
    envelope_key = "session"
    lookup_url_kwarg = "localSessionId"
    device_token_actions = ("list", "create", "retrieve", "heartbeat", "complete")
    daemon_actions = ("heartbeat", "complete")

    def get_queryset(self):
        return selectors.sessions_visible(
            user=self.request.user, thread_id=self.kwargs["threadId"], device_id=token_device_id(self.request)
        )

    def get_thread(self) -> Thread:
        # Sessions may be listed and created in any of the user's threads, also with a device token.
        return get_object_or_404(
            Thread.objects.only("id", "environment_id"), pk=self.kwargs["threadId"], user=self.request.user
        )

    def list(self, request, *args, **kwargs):
        self.get_thread()
        return super().list(request, *args, **kwargs)

    @extend_schema(request=LocalSessionCreateSerializer, responses={201: SessionEnvelope})
    @idempotent
    def create(self, request, *args, **kwargs):
        thread = self.get_thread()
        payload = LocalSessionCreateSerializer(data=request.data, context=self.get_serializer_context())
        payload.is_valid(raise_exception=True)
        session = services.local_session_create(user=request.user, thread=thread, **payload.validated_data)
        return Response(self.wrap(self.get_serializer(session).data), status=status.HTTP_201_CREATED)

    @extend_schema(
        request=LocalSessionHeartbeatSerializer,
        responses={200: SessionEnvelope, 409: CONFLICT_SESSION},
        summary="Record a heartbeat of a local session",
    )
    @action(detail=True, methods=["post"])
    def heartbeat(self, request, *args, **kwargs):
        payload = LocalSessionHeartbeatSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        session = services.local_session_heartbeat(
            session=self.kwargs["localSessionId"], sessions=self.get_queryset(), **payload.validated_data
        )
        return Response(self.wrap(self.get_serializer(session).data))

    @extend_schema(
        request=LocalSessionCompleteSerializer,
        responses={200: SessionEnvelope, 409: SESSION_TRANSITION_CONFLICT},
        summary="End a local session (completed, failed or cancelled)",
    )
    @action(detail=True, methods=["post"])
    def complete(self, request, *args, **kwargs):
        payload = LocalSessionCompleteSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        outcome = services.local_session_complete(
            session=self.kwargs["localSessionId"], sessions=self.get_queryset(), **payload.validated_data
        )
        return Response(self.wrap(self.get_serializer(outcome.obj).data))


POLL_PARAMETERS = [
    OpenApiParameter("limit", OpenApiTypes.INT, description="How many commands, 1–100 (default 50)."),
    OpenApiParameter(
        "wait",
        OpenApiTypes.NUMBER,
        description="Seconds to wait for a command when none is pending (default 0; capped at 30).",
    ),
]
PollEnvelope = inline_serializer(
    "ControlCommandPoll",
    {
        "object": serializers.ChoiceField(choices=["list"]),
        "data": ControlCommandSerializer(many=True),
        "total_count": serializers.IntegerField(help_text="How many commands are pending in all."),
        "has_more": serializers.BooleanField(),
    },
)


@extend_schema(tags=["control commands"])
class ControlCommandViewSet(OwnedViewSetMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Control commands of a local session: queued by a client, fetched and acknowledged by the daemon."""

    queryset = ControlCommand.objects.all()
    serializer_class = ControlCommandSerializer
    filterset_class = ControlCommandFilterSet
    envelope_key = "command"
    related_envelopes = {LocalSession: ("session", LocalSessionSerializer)}
    lookup_url_kwarg = "commandId"
    device_token_actions = ("list", "create", "retrieve", "ack", "poll")
    daemon_actions = ("ack", "poll")

    def get_queryset(self):
        return selectors.commands_visible(
            user=self.request.user,
            thread_id=self.kwargs["threadId"],
            session_id=self.kwargs["localSessionId"],
            device_id=token_device_id(self.request),
        )

    def get_sessions(self):
        """The sessions of the path's thread the caller may see (lazy: services lock the one they need)."""
        return selectors.sessions_visible(
            user=self.request.user, thread_id=self.kwargs["threadId"], device_id=token_device_id(self.request)
        )

    def require_session(self) -> None:
        if not self.get_sessions().filter(pk=self.kwargs["localSessionId"]).exists():
            raise Http404

    def list(self, request, *args, **kwargs):
        self.require_session()
        return super().list(request, *args, **kwargs)

    @extend_schema(
        request=ControlCommandCreateSerializer,
        responses={201: CommandEnvelope, 409: CONFLICT_SESSION},
        summary="Send a control command to a local session",
    )
    @idempotent
    def create(self, request, *args, **kwargs):
        payload = ControlCommandCreateSerializer(data=request.data)
        self.require_session()
        payload.is_valid(raise_exception=True)
        command = services.command_enqueue(
            session=self.kwargs["localSessionId"], sessions=self.get_sessions(), **payload.validated_data
        )
        return Response(self.wrap(self.get_serializer(command).data), status=status.HTTP_201_CREATED)

    @extend_schema(
        request=ControlCommandAckSerializer,
        responses={200: CommandEnvelope, 409: COMMAND_TRANSITION_CONFLICT},
        summary="Acknowledge or complete local session control command",
        description="Legal moves and repeats of the current status → 200 (a repeat changes nothing).",
    )
    @action(detail=True, methods=["post"])
    def ack(self, request, *args, **kwargs):
        payload = ControlCommandAckSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = dict(payload.validated_data)
        if "payload" in data:
            data["result"] = data.pop("payload")
        outcome = services.command_ack(
            session=self.kwargs["localSessionId"],
            command_id=self.kwargs["commandId"],
            sessions=self.get_sessions(),
            **data,
        )
        return Response(self.wrap(self.get_serializer(outcome.obj).data))

    @extend_schema(
        parameters=POLL_PARAMETERS,
        responses={200: PollEnvelope},
        summary="Fetch pending control commands (the daemon's poll), oldest first",
        description="With `wait`, waits until a command is pending or `wait` seconds pass.",
    )
    def poll(self, request, *args, **kwargs):
        refuse_unknown_query_params(request, self, allowed=PollParamsSerializer().fields)
        params = PollParamsSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        limit = params.validated_data["limit"]
        wait = min(params.validated_data["wait"], settings.ACP_LONG_POLL_MAX_WAIT)
        scope = {
            "user": request.user,
            "thread_id": self.kwargs["threadId"],
            "session_id": self.kwargs["localSessionId"],
            "device_id": token_device_id(request),
        }

        def fetch():
            rows, total = selectors.commands_pending(**scope, limit=limit)
            data = ControlCommandSerializer(rows, many=True).data
            return list_envelope(data, total, total > len(rows))

        envelope = fetch()
        if envelope["data"]:
            return Response(envelope)
        self.require_session()
        response = Response(envelope)
        if wait > 0:

            def check():
                found = fetch()
                return (200, found) if found["data"] else None

            response.long_poll = LongPoll(
                key=services.command_notify_key(scope["session_id"]),
                timeout=wait,
                check=check,
                on_timeout=lambda: (200, list_envelope([], 0, False)),
            )
        return response
