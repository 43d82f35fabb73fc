"""`/v1/threads`, their local sessions and the sessions' control commands."""

import hashlib
import json

from django.core.exceptions import ObjectDoesNotExist
from django.db import transaction
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from acp.api.errors import ApiError, Conflict, StateTransitionConflict
from acp.api.longpoll import LongPoll, LongPollResponse, PollParamsSerializer, poll_parameters
from acp.api.pagination import list_envelope
from acp.api.permissions import token_device_id
from acp.api.schema import envelope_serializer
from acp.api.serializers import ErrorSerializer
from acp.api.viewsets import OwnedViewSetMixin
from commands import selectors, services
from commands.api.serializers import (
    ControlCommandAckSerializer,
    ControlCommandCreateSerializer,
    ControlCommandSerializer,
    LocalSessionCompleteSerializer,
    LocalSessionCreateSerializer,
    LocalSessionHeartbeatSerializer,
    LocalSessionSerializer,
    ThreadSerializer,
)
from commands.filtersets import ControlCommandFilterSet, LocalSessionFilterSet, ThreadFilterSet
from commands.models import ControlCommand, LocalSession, Thread

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_LENGTH = 255

SessionEnvelope = envelope_serializer("session", LocalSessionSerializer)
CommandEnvelope = envelope_serializer("command", ControlCommandSerializer)
ThreadEnvelope = envelope_serializer("thread", ThreadSerializer)

CONFLICT_SESSION = OpenApiResponse(ErrorSerializer, "The session has ended, or is (not) paused; `details.session`.")
SESSION_TRANSITION_CONFLICT = OpenApiResponse(
    ErrorSerializer, "`state_transition_conflict`: the session already ended otherwise; `details.session`."
)
COMMAND_TRANSITION_CONFLICT = OpenApiResponse(
    ErrorSerializer, "`state_transition_conflict`: that move is not allowed; the current command in `details.command`."
)


class DomainErrorsMixin:
    """Map the domain errors of `commands.services` (and missing rows) to HTTP."""

    def handle_exception(self, exc):
        if isinstance(exc, ObjectDoesNotExist):
            exc = Http404()
        elif isinstance(exc, services.InvalidTransition):
            exc = StateTransitionConflict(exc.message, details=self._describe(exc.obj))
        elif isinstance(exc, services.PreconditionFailed):
            exc = Conflict(exc.message, details=self._describe(exc.session))
        elif isinstance(exc, services.InvalidInput):
            exc = ApiError(exc.message, details={field: [message] for field, message in exc.errors.items()})
        return super().handle_exception(exc)

    def _describe(self, obj) -> dict:
        if isinstance(obj, ControlCommand):
            return {"command": ControlCommandSerializer(obj).data}
        return {"session": LocalSessionSerializer(obj).data}


@extend_schema(tags=["threads"])
class ThreadViewSet(OwnedViewSetMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Threads. A device token may read the threads that have a session on its device; creating is user work."""

    queryset = Thread.objects.all()
    serializer_class = ThreadSerializer
    filterset_class = ThreadFilterSet
    envelope_key = "thread"
    lookup_url_kwarg = "threadId"
    device_token_actions = ("list", "retrieve")

    def get_queryset(self):
        return selectors.threads_visible(user=self.request.user, device_id=token_device_id(self.request))

    @extend_schema(responses={201: ThreadEnvelope})
    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        thread = services.thread_create(user=request.user, **serializer.validated_data)
        return Response(self.wrap(self.get_serializer(thread).data), status=status.HTTP_201_CREATED)

    def retrieve(self, request, *args, **kwargs):
        return Response(self.wrap(self.get_serializer(self.get_object()).data))


@extend_schema(tags=["local sessions"])
class LocalSessionViewSet(DomainErrorsMixin, OwnedViewSetMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Local execution sessions of a thread. A device token works only with sessions on its own device."""

    queryset = LocalSession.objects.all()
    serializer_class = LocalSessionSerializer
    filterset_class = LocalSessionFilterSet
    envelope_key = "session"
    lookup_url_kwarg = "localSessionId"
    device_token_actions = ("list", "create", "retrieve", "heartbeat", "complete")

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
    def create(self, request, *args, **kwargs):
        thread = self.get_thread()
        payload = LocalSessionCreateSerializer(data=request.data, context=self.get_serializer_context())
        payload.is_valid(raise_exception=True)
        session = services.local_session_create(user=request.user, thread=thread, **payload.validated_data)
        return Response(self.wrap(self.get_serializer(session).data), status=status.HTTP_201_CREATED)

    def retrieve(self, request, *args, **kwargs):
        return Response(self.wrap(self.get_serializer(self.get_object()).data))

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
class ControlCommandViewSet(DomainErrorsMixin, OwnedViewSetMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Control commands of a local session: queued by a client, fetched and acknowledged by the daemon."""

    queryset = ControlCommand.objects.all()
    serializer_class = ControlCommandSerializer
    filterset_class = ControlCommandFilterSet
    envelope_key = "command"
    lookup_url_kwarg = "commandId"
    device_token_actions = ("list", "create", "retrieve", "ack", "poll")

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

    def retrieve(self, request, *args, **kwargs):
        return Response(self.wrap(self.get_serializer(self.get_object()).data))

    @extend_schema(
        request=ControlCommandCreateSerializer,
        parameters=[
            OpenApiParameter(
                IDEMPOTENCY_HEADER,
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="Up to 255 characters, per user: a repeat replays the first answer.",
            )
        ],
        responses={
            201: CommandEnvelope,
            409: CONFLICT_SESSION,
            422: OpenApiResponse(ErrorSerializer, "The Idempotency-Key was used with a different request."),
        },
        summary="Send a control command to a local session",
    )
    def create(self, request, *args, **kwargs):
        key = self._idempotency_key(request)
        payload = ControlCommandCreateSerializer(data=request.data)
        self.require_session()
        payload.is_valid(raise_exception=True)
        if key is None:
            return self._enqueue(payload.validated_data)
        with transaction.atomic():
            record, created = services.idempotency_key_claim(
                user=request.user, key=key, fingerprint=self._fingerprint(request)
            )
            if not created:
                return self._replay(record)
            try:
                response = self._enqueue(payload.validated_data)
                command_id = response.data["command"]["id"]
            except services.PreconditionFailed as exc:
                # The first answer is what the key stands for, refusals included.
                response = self.handle_exception(exc)
                command_id = None
            services.idempotency_key_store(
                record=record, status=response.status_code, body=response.data, command_id=command_id
            )
        return response

    def _enqueue(self, data) -> Response:
        command = services.command_enqueue(session=self.kwargs["localSessionId"], sessions=self.get_sessions(), **data)
        return Response(self.wrap(self.get_serializer(command).data), status=status.HTTP_201_CREATED)

    @staticmethod
    def _idempotency_key(request) -> str | None:
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is None:
            return None
        if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or "\x00" in key:
            raise ApiError(
                f"{IDEMPOTENCY_HEADER} must be 1–{MAX_IDEMPOTENCY_KEY_LENGTH} characters, without NUL.",
                details={IDEMPOTENCY_HEADER: ["Invalid idempotency key."]},
            )
        return key

    @staticmethod
    def _fingerprint(request) -> str:
        document = json.dumps(
            {"method": request.method, "path": request.path, "body": request.data},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(document.encode()).hexdigest()

    def _replay(self, record) -> Response:
        if record.request_fingerprint != self._fingerprint(self.request):
            raise ApiError(
                f"This {IDEMPOTENCY_HEADER} was already used with a different request.",
                code="idempotency_key_reused",
                status_code=status.HTTP_422_UNPROCESSABLE_ENTITY,
            )
        return Response(record.response_body, status=record.response_status, headers={"Idempotent-Replayed": "true"})

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
        parameters=poll_parameters("commands"),
        responses={200: PollEnvelope},
        summary="Fetch pending control commands (the daemon's poll), oldest first",
        description="With `wait`, waits until a command is pending or `wait` seconds pass.",
    )
    def poll(self, request, *args, **kwargs):
        params = PollParamsSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        limit, wait = params.validated_data["limit"], params.validated_data["wait"]
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
        if wait == 0:
            return Response(envelope)

        def check():
            found = fetch()
            return (200, found) if found["data"] else None

        return LongPollResponse(
            LongPoll(
                key=services.command_notify_key(scope["session_id"]),
                timeout=wait,
                check=check,
                on_timeout=lambda: (200, envelope),
            )
        )
