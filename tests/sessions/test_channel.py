"""The machine channel in one process: who may open it, what one wake-up costs, presence in one statement, and the
configuration refused at start-up. (Live behaviour, across processes: test_channel_live.py.)"""

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from acp.models import ApiToken, Device
from acp.presence import ChannelPresence
from acp.realtime import get_listener, machine_key
from acp.services import token_hash
from commands.services import command_enqueue, local_session_create, thread_create
from sessions.api.channel import MachineChannel
from sessions.selectors import ChannelState
from sessions.services import ChannelOpen, machine_channel_open, machine_channels_open
from tests.conftest import make_client, make_token
from tests.sessions.conftest import make_launch
from tests.sessions.live import REPO_ROOT

pytestmark = pytest.mark.django_db


def stream_url(machine_id, query=""):
    return f"/api/v1/machines/{machine_id}/stream{query}"


def test_who_may_open_a_channel(user, device, second_device, other_device):
    own_device = make_client(make_token(user, device=device))
    for foreign in (second_device.id, other_device.id, uuid.uuid4()):  # another machine of mine, another user's, none
        answer = own_device.get(stream_url(foreign), HTTP_ACCEPT="text/event-stream")
        assert answer.status_code == 404 and answer.json()["code"] == "not_found"
    assert make_client(make_token(user)).get(stream_url(other_device.id)).status_code == 404
    assert make_client(None).get(stream_url(device.id)).status_code == 401
    assert own_device.get(f"/api/v1/machines/{device.id}x/stream").status_code == 404  # not a UUID
    unknown = own_device.get(stream_url(device.id, "?since=3"))
    assert unknown.status_code == 400 and "since" in unknown.json()["details"]
    read_only = make_client(make_token(user, scopes=["read"])).get(stream_url(device.id))
    assert read_only.status_code == 403 and read_only.json()["code"] == "forbidden"  # it would take the daemon's slot
    assert Device.objects.get(pk=device.pk).channel_id is None  # none of them opened it


def test_opening_proves_ownership_marks_seen_and_takes_the_slot_in_one_statement(
    user, device, other_device, django_assert_num_queries
):
    Device.objects.filter(pk=device.pk).update(last_seen_at=timezone.now() - timedelta(hours=1))
    channel_id = uuid.uuid4()
    with django_assert_num_queries(1):
        opened = machine_channel_open(user_id=user.pk, machine_id=device.pk, channel_id=channel_id)
    assert opened == ChannelState(current=True, token_usable=True, launches_pending=False, commands_pending=False)
    device.refresh_from_db()
    assert device.channel_id == channel_id and device.is_online() and device.channel_opened_at is not None
    assert machine_channel_open(user_id=user.pk, machine_id=other_device.pk, channel_id=uuid.uuid4()) is None
    assert Device.objects.get(pk=other_device.pk).channel_id is None


def test_a_connect_that_arrived_before_the_current_channels_does_not_take_its_place(user, workspace, device):
    """Two connects of one machine open at once: the one that arrived last holds the slot, whichever opens last (a
    daemon's own abandoned connect must not end its live one)."""
    make_launch(workspace)
    live = uuid.uuid4()
    assert machine_channel_open(user_id=user.pk, machine_id=device.pk, channel_id=live).current
    arrived = Device.objects.get(pk=device.pk).channel_opened_at
    stale = uuid.uuid4()
    a_minute_ago = time.monotonic() - 60
    opened = machine_channel_open(user_id=user.pk, machine_id=device.pk, channel_id=stale, arrived=a_minute_ago)
    assert opened == ChannelState(current=False, token_usable=True, launches_pending=True, commands_pending=False)
    device.refresh_from_db()
    assert device.channel_id == live and device.channel_opened_at == arrived and device.is_online()
    batch = MachineChannel(device.pk, stale, None, opened)()
    assert batch.last and [(m.event, m.id) for m in batch.messages] == [("replaced", None)]  # not the launch
    later = uuid.uuid4()
    assert machine_channel_open(user_id=user.pk, machine_id=device.pk, channel_id=later).current
    device.refresh_from_db()
    assert device.channel_id == later and device.channel_opened_at > arrived


def test_a_batch_of_opens_is_one_statement_that_records_their_tokens_uses_and_wakes_the_channels_they_replace(
    user, second_device, device, other_device, django_assert_num_queries
):
    """Three asks of one batch, two of them the user's machines (one with a channel to replace) and one another
    user's: one statement opens the two, records both tokens' uses, and wakes the replaced channel; the third is
    None and changes nothing."""
    tokens = [ApiToken.objects.get(key_hash=token_hash(make_token(user, device=m))) for m in (device, second_device)]
    old_channel = uuid.uuid4()
    machine_channel_open(user_id=user.pk, machine_id=device.pk, channel_id=old_channel)
    asks = [
        ChannelOpen(user.pk, device.pk, uuid.uuid4(), tokens[0]),
        ChannelOpen(user.pk, other_device.pk, uuid.uuid4()),
        ChannelOpen(user.pk, second_device.pk, uuid.uuid4(), tokens[1]),
    ]
    with django_assert_num_queries(1):
        states = machine_channels_open(asks)
    opened = ChannelState(current=True, token_usable=True, launches_pending=False, commands_pending=False)
    assert states == [opened, None, opened]
    assert [Device.objects.get(pk=ask.machine_id).channel_id for ask in asks] == [
        asks[0].channel_id,
        None,
        asks[2].channel_id,
    ]
    assert all(ApiToken.objects.get(pk=token.pk).last_used_at is not None for token in tokens)
    replaced = MachineChannel(device.pk, old_channel, tokens[0].pk)()
    assert replaced.last and [m.event for m in replaced.messages] == ["replaced"]


@pytest.mark.django_db(transaction=True)  # the wake-ups go out on commit
def test_a_batch_of_opens_wakes_each_machines_other_channels_and_not_their_own(user, device, second_device):
    channels = {machine.pk: uuid.uuid4() for machine in (device, second_device)}
    listener = get_listener()
    others = [listener.subscribe(machine_key(machine_id)) for machine_id in channels]  # e.g. the channels replaced
    own = [listener.subscribe(machine_key(machine_id), origin=str(channel)) for machine_id, channel in channels.items()]
    try:
        opened = machine_channels_open(
            [ChannelOpen(user.pk, machine, channel) for machine, channel in channels.items()]
        )
        assert [state.current for state in opened] == [True, True]

        async def woken(subscription, timeout) -> bool:
            return await subscription.wait(timeout)

        assert [asyncio.run(woken(subscription, 5)) for subscription in others] == [True, True]
        assert [asyncio.run(woken(subscription, 0.2)) for subscription in own] == [False, False]
    finally:
        for subscription in others + own:
            subscription.close()


def test_a_machine_asked_for_twice_in_one_batch_is_held_by_the_ask_that_arrived_last(
    user, device, django_assert_num_queries
):
    """In either order in the batch: the later ask goes in a second statement, and holds the slot only if it
    arrived last (as two connects opened one after the other)."""
    for earlier_first in (True, False):
        earlier = ChannelOpen(user.pk, device.pk, uuid.uuid4(), arrived=time.monotonic() - 60)
        later = ChannelOpen(user.pk, device.pk, uuid.uuid4(), arrived=time.monotonic())
        asks = [earlier, later] if earlier_first else [later, earlier]
        with django_assert_num_queries(2):
            states = dict(zip(asks, machine_channels_open(asks), strict=True))
        assert states[later].current and states[earlier].current == earlier_first  # held it until the later came
        assert Device.objects.get(pk=device.pk).channel_id == later.channel_id


def test_opening_records_the_use_of_the_callers_token_in_the_same_statement(user, device, django_assert_num_queries):
    ApiToken.objects.filter(key_hash=token_hash(make_token(user))).update(last_used_at=None)
    token = ApiToken.objects.get(key_hash=token_hash(make_token(user)))
    with django_assert_num_queries(1):
        machine_channel_open(user_id=user.pk, machine_id=device.pk, channel_id=uuid.uuid4(), token=token)
    recorded = ApiToken.objects.get(pk=token.pk).last_used_at
    assert recorded is not None and token.last_used_at == recorded
    soon = recorded + timedelta(seconds=1)  # within ACP_TOKEN_TOUCH_INTERVAL: not recorded again
    machine_channel_open(user_id=user.pk, machine_id=device.pk, channel_id=uuid.uuid4(), token=token, now=soon)
    assert ApiToken.objects.get(pk=token.pk).last_used_at == recorded
    later = recorded + timedelta(hours=1)
    machine_channel_open(user_id=user.pk, machine_id=device.pk, channel_id=uuid.uuid4(), token=token, now=later)
    assert ApiToken.objects.get(pk=token.pk).last_used_at == later


def test_the_open_reads_what_is_pending_so_the_first_fetch_of_an_idle_machine_costs_no_query(
    user, workspace, device, django_assert_num_queries
):
    token_id = ApiToken.objects.get(key_hash=token_hash(make_token(user))).pk
    idle = machine_channel_open(user_id=user.pk, machine_id=device.pk, channel_id=(channel_id := uuid.uuid4()))
    with django_assert_num_queries(0):
        assert MachineChannel(device.pk, channel_id, token_id, idle)().messages == []
    launch = make_launch(workspace)
    busy = machine_channel_open(user_id=user.pk, machine_id=device.pk, channel_id=(channel_id := uuid.uuid4()))
    assert busy == ChannelState(current=True, token_usable=True, launches_pending=True, commands_pending=False)
    with django_assert_num_queries(1):  # the launches only: no state query, no commands query
        batch = MachineChannel(device.pk, channel_id, token_id, busy)()
    assert [message.id for message in batch.messages] == [f"launch:{launch.pk}"]


def test_a_wake_up_costs_three_small_queries_and_sends_each_item_once(
    user, workspace, device, django_assert_max_num_queries
):
    thread = thread_create(user=user, title="t")
    sessions = [local_session_create(user=user, thread=thread, device=device, status="running") for _ in range(3)]
    for session in sessions:
        command_enqueue(session=session, command_type="pause")
    for _ in range(3):
        make_launch(workspace)
    channel_id = uuid.uuid4()
    machine_channel_open(user_id=user.pk, machine_id=device.pk, channel_id=channel_id)
    channel = MachineChannel(device.pk, channel_id, ApiToken.objects.get(key_hash=token_hash(make_token(user))).pk)
    with django_assert_max_num_queries(3):
        batch = channel()
    assert [message.event for message in batch.messages] == ["launch"] * 3 + ["command"] * 3
    with django_assert_max_num_queries(3):
        assert channel().messages == []  # a wake-up with nothing new: nothing again
    machine_channel_open(user_id=user.pk, machine_id=device.pk, channel_id=uuid.uuid4())
    replaced = channel()
    assert replaced.last and [(m.event, m.id) for m in replaced.messages] == [("replaced", None)]


def test_presence_refreshes_every_held_channel_in_one_statement(user, django_assert_num_queries):
    long_ago = timezone.now() - timedelta(hours=1)
    machines = [Device.objects.create(user=user, name=f"m{n}", last_seen_at=long_ago) for n in range(3)]
    presence = ChannelPresence()
    channel_ids = [uuid.uuid4() for _ in machines[:2]]
    for machine, channel_id in zip(machines, channel_ids, strict=False):
        machine_channel_open(user_id=user.pk, machine_id=machine.pk, channel_id=channel_id)
    Device.objects.update(last_seen_at=long_ago)
    with contextlib.ExitStack() as holding:
        for channel_id in channel_ids:
            holding.enter_context(presence.hold(channel_id))
        with django_assert_num_queries(1):
            assert presence.refresh() == 2
    assert [machine.is_online() for machine in Device.objects.order_by("name")] == [True, True, False]
    assert presence.held() == [] and presence.refresh() == 0


def start_up(**settings) -> subprocess.CompletedProcess:
    """Django set up in a process of its own with these settings in its environment."""
    environment = {**os.environ, "SECRET_KEY": "x", "DJANGO_SETTINGS_MODULE": "acp.settings", **settings}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_presence_interval_not_below_the_offline_time_is_refused_at_start_up():
    done = start_up(ACP_DEVICE_OFFLINE_AFTER="30", ACP_CHANNEL_PRESENCE_INTERVAL="30")
    assert done.returncode != 0 and "ACP_CHANNEL_PRESENCE_INTERVAL (30) must be" in done.stderr


@pytest.mark.parametrize(
    "setting",
    [
        {"ACP_CHANNEL_CONNECTS_AT_ONCE": "0"},  # no connect would ever be opened
        {"ACP_CHANNEL_CONNECT_BATCH": "0"},  # nor here
        {"ACP_CHANNEL_CONNECTS_PER_SECOND": "-1"},
        {"ACP_CHANNEL_CONNECT_QUEUE_WAIT": "-1"},
    ],
)
def test_a_connect_admission_that_could_not_work_is_refused_at_start_up(setting):
    done = start_up(**setting)
    assert done.returncode != 0 and "ACP_CHANNEL_CONNECTS_AT_ONCE and ACP_CHANNEL_CONNECT_BATCH must be" in done.stderr


def test_the_default_connect_admission_starts():
    assert start_up().returncode == 0
