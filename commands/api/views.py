"""`/v1/threads`, their local sessions and the sessions' control commands."""

from django.conf import settings
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from acp.api.idempotency import idempotent
from acp.api.longpoll import LongPoll, LongPollResponse, PollParamsSerializer, poll_parameters
from acp.api.pagination import list_envelope
from acp.api.permissions import token_device_id
from acp.api.query_params import refuse_unknown_query_params
from acp.api.schema import envelope_serializer
from acp.api.serializers import ErrorSerializer
from acp.api.sse import MEDIA_TYPE, AfterPosition, EventStream, EventStreamResponse, EventStreamViewMixin, wants_stream
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
    ThreadEventIngestResultSerializer,
    ThreadEventIngestSerializer,
    ThreadEventParamsSerializer,
    ThreadEventSerializer,
    ThreadSerializer,
    ThreadUpdateSerializer,
)
from commands.choices import EventSource
from commands.filtersets import ControlCommandFilterSet, LocalSessionFilterSet, ThreadFilterSet
from commands.models import ControlCommand, LocalSession, Thread, ThreadEvent

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

    def session_scope(self) -> selectors.SessionScope:
        """The sessions of the path's thread the caller may see (services lock the one they need)."""
        return selectors.SessionScope(self.request.user.pk, self.kwargs["threadId"], token_device_id(self.request))

    def require_session(self) -> None:
        if not self.session_scope().has(self.kwargs["localSessionId"]):
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
            session=self.kwargs["localSessionId"], sessions=self.session_scope(), **payload.validated_data
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
            sessions=self.session_scope(),
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
        refuse_unknown_query_params(request, self, allowed=PollParamsSerializer().fields)
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


EVENT_PARAMETERS = [
    OpenApiParameter("after", OpenApiTypes.INT, description="A sequence (or cursor): only events after it."),
    OpenApiParameter("cursor", OpenApiTypes.STR, description="`next_cursor` of a previous page (same as `after`)."),
    OpenApiParameter("before", OpenApiTypes.INT, description="Only events before this sequence (not with stream)."),
    OpenApiParameter("limit", OpenApiTypes.INT, description="1–500 (default 100); with stream, end after as many."),
    OpenApiParameter("sessionId", OpenApiTypes.UUID, description="Only this local session's events."),
    OpenApiParameter("type", OpenApiTypes.STR, description="Only these types (comma-separated)."),
    OpenApiParameter("source", OpenApiTypes.STR, enum=EventSource.values, description="Only events from this source."),
    OpenApiParameter(
        "stream",
        OpenApiTypes.BOOL,
        description="true: Server-Sent Events (also with `Accept: text/event-stream`): the backlog, then live events.",
    ),
    OpenApiParameter(
        "Last-Event-ID", OpenApiTypes.INT, OpenApiParameter.HEADER, description="Resume a stream after this sequence."
    ),
]
EventPage = inline_serializer(
    "ThreadEventPage",
    {
        "object": serializers.ChoiceField(choices=["list"]),
        "data": ThreadEventSerializer(many=True),
        "total_count": serializers.IntegerField(help_text="How many events match, from `after` on."),
        "has_more": serializers.BooleanField(),
        "next_cursor": serializers.CharField(allow_null=True, help_text="Pass as `cursor` (or `after`) to continue."),
    },
)
EventMessage = inline_serializer(
    "ThreadEventStreamMessage",
    {
        "id": serializers.CharField(help_text="The event's sequence (send it back as Last-Event-ID)."),
        "data": serializers.CharField(help_text="The event, as a ThreadEvent JSON document."),
        "event": serializers.CharField(required=False, help_text="Not sent: every message is a plain `message`."),
    },
)
SSE_DESCRIPTION = (
    "Each event is `id: <sequence>` and `data: <event JSON>`; a `: keepalive` comment every `ACP_STREAM_HEARTBEAT` "
    "seconds; the server ends the stream after `ACP_STREAM_MAX_SECONDS` (reconnect with `Last-Event-ID`)."
)


class ThreadEventViewSet(EventStreamViewMixin, viewsets.GenericViewSet):
    """A thread's timeline: what its daemon, its user and the server recorded, in order (`sequence`)."""

    queryset = ThreadEvent.objects.all()
    serializer_class = ThreadEventSerializer
    pagination_class = None
    device_token_actions = ("read", "ingest")

    def get_thread(self) -> Thread:
        threads = selectors.threads_visible(user=self.request.user, device_id=token_device_id(self.request))
        return get_object_or_404(threads.only("id"), pk=self.kwargs["threadId"])

    @extend_schema(
        parameters=EVENT_PARAMETERS,
        responses={(200, "application/json"): EventPage, (200, MEDIA_TYPE): EventMessage},
        summary="List or stream a thread's events, oldest first",
        description=SSE_DESCRIPTION,
    )
    def read(self, request, *args, **kwargs):  # not "list": one page envelope, not an array, in the schema
        params = self.event_params(request)
        thread = self.get_thread()
        if wants_stream(request, params.pop("stream")):
            return self.stream(request, thread, params)
        limit = params.pop("limit")
        rows, total = selectors.events_page(thread_id=thread.pk, limit=limit, **params)
        envelope = list_envelope(ThreadEventSerializer(rows, many=True).data, total, total > len(rows))
        last = rows[-1].sequence if rows else params["after"]
        envelope["next_cursor"] = str(last) if last else None
        return Response(envelope)

    @staticmethod
    def event_params(request) -> dict:
        refuse_unknown_query_params(request, None, allowed=ThreadEventParamsSerializer().fields)
        repeated = sorted(name for name, values in request.query_params.lists() if len(values) > 1)
        if repeated:
            raise ValidationError({name: ["Given more than once."] for name in repeated})
        empty = sorted(name for name, value in request.query_params.items() if value == "")
        if empty:  # DRF would read an empty optional parameter as absent: a filter silently dropped
            raise ValidationError({name: ["May not be empty."] for name in empty})
        params = ThreadEventParamsSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = dict(params.validated_data)
        data["types"] = data.pop("type", None)
        return data

    def stream(self, request, thread: Thread, params: dict) -> EventStreamResponse:
        if params.get("before") is not None:
            raise ValidationError({"before": ["A stream has no end: before cannot be used with stream."]})
        after = params.pop("after")
        last_event_id = request.headers.get("Last-Event-ID")
        if last_event_id:
            if not last_event_id.isdigit():
                raise ValidationError({"Last-Event-ID": ["Must be an event's sequence."]})
            after = int(last_event_id)  # a reconnection resumes where it stopped, whatever the URL says
        limit = params.pop("limit")
        limit = limit if "limit" in request.query_params else None
        page_size = 100
        filters = {key: value for key, value in params.items() if key != "before"}

        def fetch(position: int) -> list[tuple[int, str]]:
            rows, _ = selectors.events_page(thread_id=thread.pk, after=position, limit=page_size, **filters)
            renderer = JSONRenderer()
            return [(row.sequence, renderer.render(ThreadEventSerializer(row).data).decode()) for row in rows]

        return EventStreamResponse(
            EventStream(
                key=services.thread_events_key(thread.pk),
                fetch=AfterPosition(fetch, after=after, page_size=page_size),
                heartbeat=settings.ACP_STREAM_HEARTBEAT,
                max_seconds=settings.ACP_STREAM_MAX_SECONDS,
                limit=limit,
            )
        )

    @extend_schema(
        request=ThreadEventIngestSerializer,
        responses={200: ThreadEventIngestResultSerializer},
        summary="Append a batch of events to a thread's timeline (the daemon's ingest)",
        description=(
            "All or nothing. An event whose `clientEventId` the thread already has is not stored again "
            "(`persistedCount` counts only new ones). A device token may ingest into threads with a session on its "
            "device (`source` daemon); a user token into its own threads (`source` user)."
        ),
    )
    @action(detail=False, methods=["post"], url_path="ingest")
    def ingest(self, request, *args, **kwargs):
        thread = self.get_thread()
        payload = ThreadEventIngestSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        device_id = token_device_id(request)
        result = services.thread_events_ingest(
            thread_id=thread.pk,
            events=payload.new_events(EventSource.USER if device_id is None else EventSource.DAEMON),
            sessions=selectors.sessions_visible(user=request.user, thread_id=thread.pk, device_id=device_id),
        )
        return Response({"success": True, "eventsProcessed": result.processed, "persistedCount": len(result.persisted)})
