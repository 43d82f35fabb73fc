"""The statements that lock several machines or tokens at once (a batch of channel opens, the presence refresh, the
tokens' uses a batch records) lock them in key order, so that two of them naming the same rows cannot deadlock: a
batch overlapping the refresh of the process that holds those machines' old channels is what a reconnect storm is
made of. Real threads on PostgreSQL: while another transaction holds the row with the lowest key, each statement
waits for it before it has locked any other row.

The rows are set up so that every other order there is goes the other way: the row with the higher key is created
first (it comes first in the table), comes first in the batch, and has the lower channel id.
"""

import uuid

import pytest
from django.db import transaction
from django.utils import timezone

from acp.models import ApiToken, Device
from acp.services import device_channels_refresh, token_hash, tokens_use_statement
from acp.serving import rawsql
from sessions.services import ChannelOpen, machine_channel_open, machine_channels_open
from tests.concurrency import row_is_locked, started, wait_until_a_backend_waits_for_a_lock
from tests.conftest import make_token

pytestmark = pytest.mark.django_db(transaction=True)

LOW, HIGH = uuid.UUID(int=1), uuid.UUID(int=(1 << 128) - 1)


@pytest.fixture
def machines(user):
    """(low, high): the high one made first."""
    high = Device.objects.create(id=HIGH, user=user, name="high")
    low = Device.objects.create(id=LOW, user=user, name="low")
    return low, high


def while_the_low_row_is_held(model, statement):
    """Run `statement` in a thread while this thread's transaction holds `model`'s row LOW; once it waits, whether
    the row HIGH is locked. Returns that and, after the hold ends, the statement's result."""
    with transaction.atomic():
        list(model.objects.select_for_update().filter(pk=LOW).values_list("pk"))
        result = started(statement)
        wait_until_a_backend_waits_for_a_lock()
        high_locked = row_is_locked(model, HIGH)
    return high_locked, result()


def test_a_batch_of_opens_locks_its_machines_in_key_order(user, machines):
    low, high = machines
    asks = [ChannelOpen(user.pk, machine.pk, uuid.uuid4()) for machine in (high, low)]

    high_locked, states = while_the_low_row_is_held(Device, lambda: machine_channels_open(asks))

    assert not high_locked
    assert [state.current for state in states] == [True, True]
    assert [Device.objects.get(pk=ask.machine_id).channel_id for ask in asks] == [ask.channel_id for ask in asks]


def test_the_presence_refresh_locks_its_machines_in_key_order(user, machines):
    low, high = machines
    channels = {high: uuid.UUID(int=10), low: uuid.UUID(int=20)}
    for machine, channel_id in channels.items():
        machine_channel_open(user_id=user.pk, machine_id=machine.pk, channel_id=channel_id)
    Device.objects.update(last_seen_at=None)

    high_locked, refreshed = while_the_low_row_is_held(
        Device, lambda: device_channels_refresh(channel_ids=sorted(channels.values()))
    )

    assert not high_locked
    assert refreshed == 2
    assert Device.objects.filter(last_seen_at=None).count() == 0


def test_the_uses_of_several_tokens_are_recorded_in_key_order(user):
    tokens = []
    for key in (HIGH, LOW):
        made = ApiToken.objects.get(key_hash=token_hash(make_token(user)))
        ApiToken.objects.filter(pk=made.pk).update(id=key, last_used_at=None)
        tokens.append(ApiToken.objects.get(pk=key))

    def record_uses():
        with rawsql.database().cursor() as cursor:
            cursor.execute(*tokens_use_statement(tokens=tokens, now=timezone.now()))
            return cursor.rowcount

    high_locked, recorded = while_the_low_row_is_held(ApiToken, record_uses)

    assert not high_locked
    assert recorded == 2
    assert ApiToken.objects.filter(last_used_at=None).count() == 0
