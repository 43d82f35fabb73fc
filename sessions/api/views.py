"""Workspaces, launching sessions on a machine, and the daemon's side of the handshake (`/api/v1`)."""

import functools

from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import mixins, serializers, viewsets
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from acp.api.idempotency import idempotent
from acp.api.longpoll import LongPoll, LongPollResponse, PollParamsSerializer, poll_parameters
from acp.api.pagination import list_envelope
from acp.api.query_params import refuse_unknown_query_params
from acp.api.serializers import ErrorSerializer
from acp.api.sse import MEDIA_TYPE, EventStreamResponse, EventStreamViewMixin
from acp.api.viewsets import OwnedModelViewSet, OwnedViewSetMixin, scope_to_owner
from acp.models import Device
from acp.realtime import machine_key
from acp.services import device_touch
from sessions import selectors, services
from sessions.api.answers import launch_answer, launch_answer_by_id, launch_answer_or_404
from sessions.api.channel import channel_open
from sessions.api.serializers import (
    LaunchAckSerializer,
    LaunchAnswerSerializer,
    LaunchQueueSerializer,
    LaunchRequestSerializer,
    LaunchSerializer,
    WorkspaceSerializer,
)
from sessions.choices import ChannelEvent
from sessions.filtersets import LaunchFilterSet, WorkspaceFilterSet
from sessions.models import Launch, Workspace


class WorkspaceViewSet(OwnedModelViewSet):
    queryset = Workspace.objects.all()
    serializer_class = WorkspaceSerializer
    filterset_class = WorkspaceFilterSet


@extend_schema(parameters=[OpenApiParameter("workspace_id", OpenApiTypes.UUID, OpenApiParameter.PATH)])
class WorkspaceLaunchViewSet(OwnedViewSetMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """`/api/v1/workspaces/{workspace_id}/sessions`: launch a session (and wait for the daemon), list launches."""

    queryset = Launch.objects.all()
    serializer_class = LaunchSerializer
    filterset_class = LaunchFilterSet
    lookup_url_kwarg = "launch_id"

    def get_workspace(self) -> Workspace:
        workspaces = scope_to_owner(Workspace.objects.select_related("default_machine"), self.request)
        return get_object_or_404(workspaces, pk=self.kwargs["workspace_id"])

    def get_queryset(self):
        return super().get_queryset().filter(workspace_id=self.kwargs["workspace_id"])

    def list(self, request, *args, **kwargs):
        self.get_workspace()  # an unknown (or someone else's) workspace is a 404, not an empty list
        return super().list(request, *args, **kwargs)

    @extend_schema(
        summary="Launch Workspace Session",
        request=LaunchRequestSerializer,
        responses={
            200: OpenApiResponse(
                LaunchAnswerSerializer,
                "The daemon's acknowledgement (`ok` or `error`), or at once `error`/`machine_offline`.",
            ),
            504: OpenApiResponse(LaunchAnswerSerializer, "No acknowledgement in time: `error`/`daemon_timeout`."),
            503: OpenApiResponse(
                LaunchAnswerSerializer,
                "The server is shutting down: `error`/`server_shutting_down` with the launch id (still pending).",
            ),
        },
    )
    @idempotent
    def launch(self, request, *args, **kwargs):
        workspace = self.get_workspace()
        body = LaunchRequestSerializer(data=request.data, context={"request": request, "workspace": workspace})
        body.is_valid(raise_exception=True)
        data = body.validated_data
        launch = services.launch_create(
            user=request.user,
            workspace=workspace,
            machine=data["machine_id"],
            user_session=data.get("user_session_id"),
            metadata=data.get("metadata"),
            initial_prompt=data.get("initial_prompt"),
            worktree_name=data.get("worktree_name"),
            session_settings=data.get("session_settings"),
            resume_session_id=data.get("resume_session_id"),
            agent_session_id=data.get("agent_session_id"),
        )
        answer = launch_answer(launch)
        if answer is not None:  # the machine is offline: answered at once
            return Response(answer[1], status=answer[0])
        return LongPollResponse(
            LongPoll(
                key=services.launch_key(launch.pk),
                timeout=max(0.0, (launch.expires_at - timezone.now()).total_seconds()),
                check=functools.partial(launch_answer_by_id, launch.pk),
                on_timeout=functools.partial(_time_out_launch, launch.pk),
                on_shutdown=functools.partial(_launch_answer_on_shutdown, launch.pk),
            )
        )


def _time_out_launch(launch_id):
    """At the deadline: time the launch out, unless an acknowledgement got in first (then answer with it)."""
    return launch_answer_or_404(services.launch_time_out(launch_id=launch_id).obj)


def _launch_answer_on_shutdown(launch_id):
    """The server is stopping: the acknowledgement if it came, else 503 with the launch id (it stays pending; the
    daemon may still acknowledge it, and the sweep times it out)."""
    answer = launch_answer_by_id(launch_id)
    if answer is not None:
        return answer
    return 503, {"status": "error", "payload": {"code": "server_shutting_down", "launch_id": str(launch_id)}}


@extend_schema(parameters=[OpenApiParameter("machine_id", OpenApiTypes.UUID, OpenApiParameter.PATH)])
class MachineLaunchViewSet(OwnedViewSetMixin, viewsets.GenericViewSet):
    """The daemon's side: fetch a machine's pending launches (long-poll) and acknowledge them.

    A device token works only for its own machine (any other → 404); a user token for any of its user's.
    """

    queryset = Launch.objects.all()
    serializer_class = LaunchSerializer
    device_field = "machine_id"
    related_envelopes = {Launch: ("launch", LaunchSerializer)}
    device_token_actions = ("poll", "acknowledge")
    daemon_actions = ("poll", "acknowledge")
    lookup_url_kwarg = "launch_id"
    pagination_class = None

    @extend_schema(
        summary="Fetch the machine's pending launches",
        description=(
            "Pending launches still within their deadline, oldest first. With `wait=S` (at most "
            "`ACP_LONG_POLL_MAX_WAIT`, 30 by default; more → 400) and none pending, waits until one arrives or S "
            "seconds pass. Counts as the machine's heartbeat."
        ),
        parameters=poll_parameters("launches"),
        responses={200: LaunchQueueSerializer},
    )
    def poll(self, request, *args, **kwargs):
        refuse_unknown_query_params(request, self, allowed=PollParamsSerializer().fields)
        params = PollParamsSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        limit, wait = params.validated_data["limit"], params.validated_data["wait"]
        machine_id = self.kwargs["machine_id"]
        machines = scope_to_owner(Device.objects.all(), request, device_field="id")
        if not device_touch(devices=machines, device_id=machine_id):  # the heartbeat, and the 404 of a foreign id
            raise NotFound()
        page = _launch_queue_page(machine_id, limit)
        if page["data"] or wait == 0:
            return Response(page)
        return LongPollResponse(
            LongPoll(
                key=machine_key(machine_id),
                timeout=wait,
                check=functools.partial(_launch_queue_answer, machine_id, limit, empty_too=False),
                on_timeout=functools.partial(_launch_queue_answer, machine_id, limit, empty_too=True),
                on_shutdown=lambda: (200, page),  # the empty page: the daemon polls again, elsewhere
            )
        )

    @extend_schema(
        summary="Acknowledge a launch",
        description=(
            "`ok`: the agent runs; the server creates the thread (or reuses the launch's `user_session_id`) and "
            "the local session, and returns the launch with their ids. `error`: the launch failed. The same "
            "acknowledgement again → 200, unchanged; a different one, or any after the launch timed out → 409."
        ),
        request=LaunchAckSerializer,
        responses={
            200: LaunchSerializer,
            409: OpenApiResponse(ErrorSerializer, "The launch timed out, failed, or was acknowledged differently."),
        },
    )
    def acknowledge(self, request, *args, **kwargs):
        launch = get_object_or_404(
            self.get_queryset(), pk=self.kwargs["launch_id"], machine_id=self.kwargs["machine_id"]
        )
        body = LaunchAckSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        acknowledged = services.launch_acknowledge(
            launch=launch, status=body.validated_data["status"], payload=body.validated_data.get("payload")
        )
        return Response(LaunchSerializer(acknowledged.obj).data)


ChannelMessage = inline_serializer(
    "MachineChannelMessage",
    {
        "event": serializers.ChoiceField(
            choices=ChannelEvent.choices,
            help_text=(
                "`launch`: a pending launch, as an item of the launches poll; `command`: a pending control command "
                "of a session on the machine, as an item of the control poll; `replaced`: another channel for the "
                "machine opened, this one ends (its daemon should stop, not reconnect)."
            ),
        ),
        "id": serializers.CharField(
            required=False, help_text="`launch:<launch id>` or `command:<command id>`; `replaced` has none."
        ),
        "data": serializers.CharField(
            help_text='JSON: a Launch, a ControlCommand, or for `replaced` `{"machine_id": "<id>"}`.'
        ),
    },
)


@extend_schema(parameters=[OpenApiParameter("machine_id", OpenApiTypes.UUID, OpenApiParameter.PATH)])
class MachineChannelViewSet(EventStreamViewMixin, viewsets.GenericViewSet):
    """The daemon's one connection: its machine's pending launches and commands, then new ones as they commit."""

    queryset = Device.objects.all()
    pagination_class = None
    device_token_actions = ("stream",)
    daemon_actions = ("stream",)
    write_actions = ("stream",)  # it takes the machine's slot (an older channel ends): not for a read-only key

    @extend_schema(
        summary="Open the machine's channel (Server-Sent Events)",
        description=(
            "First every pending launch (oldest first), then every pending control command of the machine's "
            "sessions (oldest first), then new ones as they commit; each is sent once per connection, and a "
            "reconnection (with or without `Last-Event-ID`) gets again whatever is still pending. Acknowledge "
            "through the launch and control endpoints. A `: keepalive` comment every `ACP_STREAM_HEARTBEAT` "
            "seconds; the stream ends after `ACP_CHANNEL_MAX_SECONDS` and when the server shuts down (reconnect), "
            "or with `event: replaced` when another channel for the machine opens. While it is open the machine "
            "is online."
        ),
        parameters=[
            OpenApiParameter(
                "Last-Event-ID",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="Accepted, not needed: a reconnection always gets what is still pending.",
            )
        ],
        responses={(200, MEDIA_TYPE): ChannelMessage},
    )
    def stream(self, request, *args, **kwargs):
        refuse_unknown_query_params(request, self, allowed=())
        stream = channel_open(request, machine_id=self.kwargs["machine_id"])
        if stream is None:
            raise NotFound()
        return EventStreamResponse(stream)


def _launch_queue_page(machine_id, limit: int) -> dict:
    queue = selectors.launch_queue(machine_id=machine_id)
    total = queue.count()
    launches = list(queue[:limit]) if total else []
    return list_envelope(LaunchSerializer(launches, many=True).data, total, total > len(launches))


def _launch_queue_answer(machine_id, limit: int, *, empty_too: bool):
    """A long-poll's result: the queue page, or None (keep waiting) while it is empty, unless `empty_too`."""
    page = _launch_queue_page(machine_id, limit)
    return (200, page) if page["data"] or empty_too else None
