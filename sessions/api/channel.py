"""A machine's channel: one stream that carries all its daemon must do (GET /api/v1/machines/{machine_id}/stream).

Opening it makes it the machine's one channel (`device_channel_open`); from then on, every wake-up of the machine's
key (a launch or a command committed, another channel opened) sends what is pending and not yet sent on this
connection: launches, then commands, each as the polls return it. A channel that finds another one in its place
sends `replaced` and ends. Nothing is remembered across connections: a reconnection gets again whatever is still
pending, and the daemon acknowledges through the polls' endpoints.
"""

from __future__ import annotations

import json
import uuid

from django.conf import settings
from rest_framework.renderers import JSONRenderer

from acp.api.sse import Batch, EventStream, Message
from acp.models import Device
from acp.presence import get_presence
from acp.realtime import machine_key
from acp.services import device_channel_open
from commands.api.serializers import ControlCommandSerializer
from commands.selectors import commands_pending_on_machine
from sessions.api.serializers import LaunchSerializer
from sessions.choices import ChannelEvent
from sessions.selectors import launch_queue

PAGE_SIZE = 100  # of each kind per fetch; a full page is followed by another fetch at once


class MachineChannel:
    """The `fetch` of one open channel: what is pending for the machine and not yet sent on this connection."""

    def __init__(self, machine_id, channel_id: uuid.UUID):
        self.machine_id = machine_id
        self.channel_id = channel_id
        self.launches_sent: set[uuid.UUID] = set()
        self.commands_sent: set[uuid.UUID] = set()

    def __call__(self) -> Batch:
        if not self.is_current():
            replaced = Message(json.dumps({"machine_id": str(self.machine_id)}), event=ChannelEvent.REPLACED.value)
            return Batch([replaced], last=True)
        launches = list(launch_queue(machine_id=self.machine_id).exclude(pk__in=self.launches_sent)[:PAGE_SIZE])
        commands = list(
            commands_pending_on_machine(device_id=self.machine_id).exclude(pk__in=self.commands_sent)[:PAGE_SIZE]
        )
        self.launches_sent.update(launch.pk for launch in launches)
        self.commands_sent.update(command.pk for command in commands)
        messages = [_message(ChannelEvent.LAUNCH, row.pk, LaunchSerializer(row).data) for row in launches]
        messages += [_message(ChannelEvent.COMMAND, row.pk, ControlCommandSerializer(row).data) for row in commands]
        return Batch(messages, more=len(launches) >= PAGE_SIZE or len(commands) >= PAGE_SIZE)

    def is_current(self) -> bool:
        """Still the machine's channel (no other opened since, and the machine not deleted)."""
        return Device.objects.filter(pk=self.machine_id, channel_id=self.channel_id).exists()


def _message(kind: ChannelEvent, pk, data) -> Message:
    return Message(JSONRenderer().render(data).decode(), id=f"{kind.value}:{pk}", event=kind.value)


def channel_open(*, machines, machine_id) -> EventStream | None:
    """Open the machine's channel if it is one of `machines` (the caller's): the stream to serve, or None (404)."""
    channel_id = uuid.uuid4()
    if not device_channel_open(devices=machines, device_id=machine_id, channel_id=channel_id):
        return None
    return EventStream(
        key=machine_key(machine_id),
        fetch=MachineChannel(machine_id, channel_id),
        heartbeat=settings.ACP_STREAM_HEARTBEAT,
        max_seconds=settings.ACP_CHANNEL_MAX_SECONDS,
        while_open=get_presence().hold(channel_id),
    )
