"""A machine's channel: one stream that carries all its daemon must do (GET /api/v1/machines/{machine_id}/stream).

Opening it makes it the machine's one channel (`machine_channel_open`); from then on, every wake-up of the machine's
key (a launch or a command committed, another channel opened) sends what is pending and not yet sent on this
connection: launches, then commands, each as the polls return it. A channel that finds another one in its place
sends `replaced` and ends. Nothing is remembered across connections: a reconnection gets again whatever is still
pending, and the daemon acknowledges through the polls' endpoints.
"""

from __future__ import annotations

import json
import random
import uuid

from django.conf import settings
from rest_framework.renderers import JSONRenderer

from acp.api.permissions import token_device_id
from acp.api.sse import Batch, EventStream, Message
from acp.presence import get_presence
from acp.realtime import machine_key, subscribe
from acp.serving.fast_streams import OpenRequest
from commands.api.serializers import ControlCommandSerializer
from commands.selectors import commands_pending_on_machine
from sessions.api.serializers import LaunchSerializer
from sessions.choices import ChannelEvent
from sessions.selectors import ChannelState, launch_queue, machine_channel_state
from sessions.services import ChannelOpen, machine_channels_open

PAGE_SIZE = 100  # of each kind per fetch; a full page is followed by another fetch at once
SENT_TRIM_AT = 1000  # ids sent on one connection before they are cut to those still pending


class MachineChannel:
    """The `fetch` of one open channel: what is pending for the machine and not yet sent on this connection."""

    def __init__(self, machine_id, channel_id: uuid.UUID, token_id, opened: ChannelState | None = None):
        self.machine_id = machine_id
        self.channel_id = channel_id
        self.token_id = token_id
        self.launches_sent: set[uuid.UUID] = set()
        self.commands_sent: set[uuid.UUID] = set()
        self._opened = opened  # what the open read: the first fetch needs no query of its own

    def __call__(self) -> Batch:
        state = self._state()
        if not state.current:
            replaced = Message(json.dumps({"machine_id": str(self.machine_id)}), event=ChannelEvent.REPLACED.value)
            return Batch([replaced], last=True)
        if not state.token_usable:  # revoked or expired since: no more work; the daemon's reconnect gets its 401
            return Batch([], last=True)
        launches, commands = [], []  # an idle machine's connect: nothing to read
        if state.launches_pending:
            pending = launch_queue(machine_id=self.machine_id)
            launches = list(pending.exclude(pk__in=_trimmed(self.launches_sent, pending))[:PAGE_SIZE])
        if state.commands_pending:
            pending = commands_pending_on_machine(device_id=self.machine_id)
            commands = list(pending.exclude(pk__in=_trimmed(self.commands_sent, pending))[:PAGE_SIZE])
        self.launches_sent.update(launch.pk for launch in launches)
        self.commands_sent.update(command.pk for command in commands)
        messages = [_message(ChannelEvent.LAUNCH, row.pk, LaunchSerializer(row).data) for row in launches]
        messages += [_message(ChannelEvent.COMMAND, row.pk, ControlCommandSerializer(row).data) for row in commands]
        return Batch(messages, more=len(launches) >= PAGE_SIZE or len(commands) >= PAGE_SIZE)

    def _state(self) -> ChannelState:
        opened, self._opened = self._opened, None
        if opened is not None:  # read by the open itself (its token was just authenticated)
            return opened
        return machine_channel_state(machine_id=self.machine_id, channel_id=self.channel_id, token_id=self.token_id)


def _trimmed(sent: set, pending) -> set:
    """`sent`, once it is large, cut to the ids still pending (the others can never come back), so a long-lived
    channel of a busy machine does not send an ever longer `NOT IN` list."""
    if len(sent) > SENT_TRIM_AT:
        sent &= set(pending.values_list("pk", flat=True))
    return sent


def _message(kind: ChannelEvent, pk, data) -> Message:
    return Message(JSONRenderer().render(data).decode(), id=f"{kind.value}:{pk}", event=kind.value)


def channel_open(caller, *, machine_id, arrived=None) -> EventStream | None:
    """Open the machine's channel for `caller` (a request, or anything with its `user` and `auth`, the token) if it
    is one of the caller's machines (a device token's own): the stream to serve, or None (404). `arrived`: when
    the connect arrived (`time.monotonic()`), if it waited for its turn since (`machine_channel_open`)."""
    [stream] = channels_open([OpenRequest(caller, arrived, {"machine_id": machine_id})])
    return stream


def channels_open(requests: list[OpenRequest]) -> list[EventStream | None]:
    """`channel_open` for each of a batch of connects (acp/serving/fast_streams.py), opened by one statement
    (`machine_channels_open`)."""
    streams: list[EventStream | None] = [None] * len(requests)
    asking = []  # (place, the request's ask, its subscription)
    try:
        for place, request in enumerate(requests):
            machine_id = request.kwargs["machine_id"]
            if token_device_id(request.caller) not in (None, machine_id):
                continue
            channel_id = uuid.uuid4()
            # Subscribed before the open reads what is pending: whatever commits after that read wakes the channel.
            subscription = subscribe(machine_key(machine_id), origin=str(channel_id))
            caller = request.caller
            ask = ChannelOpen(caller.user.pk, machine_id, channel_id, caller.auth, request.arrived)
            asking.append((place, ask, subscription))
        states = machine_channels_open([ask for _, ask, _ in asking])
    except BaseException:
        for _, _, subscription in asking:
            subscription.close()
        raise
    for (place, ask, subscription), opened in zip(asking, states, strict=True):
        if opened is None:
            subscription.close()
        else:
            streams[place] = _stream(ask, opened, subscription)
    return streams


def _stream(ask: ChannelOpen, opened: ChannelState, subscription) -> EventStream:
    return EventStream(
        key=subscription.key,
        fetch=MachineChannel(ask.machine_id, ask.channel_id, ask.token.pk, opened),
        heartbeat=settings.ACP_STREAM_HEARTBEAT,
        # Spread over the last tenth: channels opened together (a reconnect storm) must not all end together.
        max_seconds=settings.ACP_CHANNEL_MAX_SECONDS * random.uniform(0.9, 1.0),
        # No timer re-check while the listener is up (it wakes every channel when its connection comes or goes): at
        # 10,000 channels a re-check a minute each would be 170 fetches a second. Each reconnection fetches anew.
        recheck=settings.ACP_CHANNEL_MAX_SECONDS,
        while_open=get_presence().hold(ask.channel_id),
        subscription=subscription,
    )
