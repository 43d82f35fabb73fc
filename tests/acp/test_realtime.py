"""Long-poll waiting (acp/api/longpoll.py): the timer re-check, the last resort for a wake-up that never came."""

import asyncio
import os
import resource
import time

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from acp.api.longpoll import LongPoll, LongPollResponse, wait_for
from acp.realtime import from_origin, get_listener, notify


def poll_that_turns_true(after: float, *, timeout: float) -> LongPoll:
    """A poll whose data 'arrives' `after` seconds from now with no notification at all (a lost wake-up)."""
    ready_at = time.monotonic() + after
    return LongPoll(
        key="test-lost-wakeup",
        timeout=timeout,
        check=lambda: "arrived" if time.monotonic() >= ready_at else None,
        on_timeout=lambda: "timed out",
    )


def timed_wait(poll: LongPoll) -> tuple[str, float]:
    async def waiting():
        started = time.monotonic()
        result = await wait_for(poll)
        return result, time.monotonic() - started

    return asyncio.run(waiting())


@pytest.mark.django_db(transaction=True)
def test_a_lost_wake_up_is_caught_by_the_timer_re_check(settings):
    settings.ACP_LONG_POLL_RECHECK = 0.5
    # A fresh LISTEN connection: one an earlier test left dead but not yet found so would, when found, wake every
    # waiter (as its reconnection does), and a wake-up after 0.2 s finds the data without the timer (CI: 0.2 s).
    get_listener().stop()
    get_listener().subscribe("warm-up").close()  # LISTEN in place: the timer is the re-check, not SQLite polling
    assert get_listener().is_listening

    result, took = timed_wait(poll_that_turns_true(0.2, timeout=10))

    assert result == "arrived"
    assert 0.4 < took < 3, took


@pytest.mark.django_db(transaction=True)
def test_with_no_re_check_before_the_deadline_a_lost_wake_up_is_found_at_the_deadline(settings):
    settings.ACP_LONG_POLL_RECHECK = 60
    get_listener().subscribe("warm-up").close()

    result, took = timed_wait(poll_that_turns_true(0.2, timeout=1.5))

    assert result == "arrived"  # the deadline's last check finds it
    assert 1.4 < took < 4, took


def test_a_long_poll_response_served_without_long_poll_view_fails_loudly():
    """A view's "wait for this" must never reach a client as an empty 200."""
    response = LongPollResponse(poll_that_turns_true(0, timeout=1))
    with pytest.raises(ImproperlyConfigured):
        response.rendered_content  # noqa: B018


@pytest.mark.django_db(transaction=True)
def test_a_notification_from_a_subscriptions_origin_wakes_every_other_subscriber_but_not_it():
    """A channel's open notifies its machine (the channel it replaces must end) but must not wake itself."""
    own = get_listener().subscribe("test-origin", origin="channel-a")
    other = get_listener().subscribe("test-origin", origin="channel-b")
    plain = get_listener().subscribe("test-origin")
    try:
        with transaction.atomic():
            notify(from_origin("test-origin", "channel-a"))

        async def woken(subscription) -> bool:
            return await subscription.wait(5)

        assert asyncio.run(woken(other)) and asyncio.run(woken(plain))
        assert not own._fired.is_set()  # the others were woken by this very notification; it was passed over
        with transaction.atomic():
            notify("test-origin")
        assert asyncio.run(woken(own))  # a plain notification of the key still wakes it
    finally:
        for subscription in (own, other, plain):
            subscription.close()


@pytest.mark.django_db
def test_the_listeners_round_trip_works_on_a_descriptor_above_1024():
    """A listener that reconnects in a process holding thousands of channels gets a descriptor above 1,024, where
    select() cannot wait: its check must still go through."""
    import psycopg

    from acp.realtime import _listener_conninfo, round_trip

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 1200:
        wanted = 2048 if hard == resource.RLIM_INFINITY else min(hard, 2048)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with psycopg.connect(**_listener_conninfo(), autocommit=True) as conn:
            assert conn.pgconn.socket > 1024
            assert round_trip(conn.pgconn, timeout=5) == []  # nothing notified meanwhile
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
