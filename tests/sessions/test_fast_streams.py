"""The fast way in for a machine's channel (acp/serving/fast_streams.py): its plain case is served without Django's
handler, every other request reaches Django untouched. Driven as ASGI in this process, with a stand-in for Django
that records what it was given (the budget test uses Django's own handler); the answers Django gives are compared
with these live in test_channel_live.py."""

import asyncio
import dataclasses
import itertools
import json
import threading
import time
import uuid

import pytest
from django.urls import resolve

from acp.api.throttling import DAEMON, token_usage
from acp.choices import Scope
from acp.models import ApiToken, Device
from acp.presence import get_presence
from acp.realtime import get_listener
from acp.services import token_hash, token_revoke
from acp.serving import fast_streams as fast_streams_module
from acp.serving.fast_streams import FastStreamRouter, fast_streams
from acp.serving.handler import OptimisedASGIHandler
from commands.services import command_enqueue, local_session_create, thread_create
from sessions.api.channel import channel_open, channels_open
from tests.conftest import make_token

pytestmark = pytest.mark.django_db(transaction=True)  # the opener runs on a worker thread, on its own connection

SSE = b"text/event-stream"


class Django:
    """Stands in for Django's handler: answers 599 and remembers each request it was handed."""

    def __init__(self):
        self.paths = []

    async def __call__(self, scope, receive, send):
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def http_scope(path, *headers, query=b"", method="GET", scheme="http", host=b"127.0.0.1"):
    return {
        "type": "http",
        "method": method,
        "scheme": scheme,
        "path": path,
        "query_string": query,
        "headers": [(b"host", host), *headers],
    }


def call(router, scope, *, until=b": connected\n\n", timeout=5.0):
    """Run the router on `scope`; a stream is read until `until` arrived, then the client goes away."""
    return asyncio.run(asyncio.wait_for(serve(router, scope, until), timeout))


async def serve(router, scope, until=b": connected\n\n"):
    """(status, headers, body) of the router's answer to `scope`, the client gone once `until` arrived."""
    messages, disconnect = [], asyncio.Event()
    received = iter([{"type": "http.request", "body": b"", "more_body": False}])

    async def receive():
        message = next(received, None)
        if message is not None:
            return message
        await disconnect.wait()
        return {"type": "http.disconnect"}

    def body():
        return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")

    async def send(message):
        messages.append(message)
        if until in body():
            disconnect.set()

    await router(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    return start["status"], dict(start["headers"]), body()


@pytest.fixture
def router():
    return FastStreamRouter(Django(), fast_streams())


def one_by_one(open_one):
    """A `FastStream` opener that opens a batch's connects one by one, with `open_one(caller, arrived=…, **kwargs)`."""
    return lambda requests: [open_one(r.caller, arrived=r.arrived, **r.kwargs) for r in requests]


def router_noting_opens(user, device):
    """A router whose channel opener notes when, and on which thread, it opens each connect (then hands it to
    Django); the scope of a plain connect; the list the opens are noted in."""
    [channel_stream] = fast_streams()
    opened = []

    def noted_open(caller, **kwargs):
        opened.append((time.monotonic(), threading.get_ident()))

    router = FastStreamRouter(Django(), [dataclasses.replace(channel_stream, open=one_by_one(noted_open))])
    return router, http_scope(channel(device.pk), (b"accept", SSE), bearer(make_token(user))), opened


def channel(machine_id):
    return f"/api/v1/machines/{machine_id}/stream"


def bearer(raw):
    return (b"authorization", f"Bearer {raw}".encode())


def test_the_route_served_fast_is_the_url_confs_channel(device, settings):
    assert resolve(channel(device.pk)).url_name == "machine-stream"
    [stream] = fast_streams()
    assert stream.match(channel(device.pk)) == {"machine_id": device.pk}
    for path in (channel(device.pk) + "/", channel(str(device.pk).upper()), f"/api/v1/machines/{device.pk}x/stream"):
        assert stream.match(path) is None
    settings.ROOT_URLCONF = "tests.sessions.older_server_urls"  # a URL conf where the path is something else
    assert stream.match(channel(device.pk)) is None


def test_a_daemon_connecting_is_served_without_django(router, user, device):
    thread = thread_create(user=user, title="t")
    session = local_session_create(user=user, thread=thread, device=device, status="running")
    command = command_enqueue(session=session, command_type="pause")
    daemon_token, user_token = make_token(user, device=device), make_token(user)
    for credential, accept in (
        (bearer(daemon_token), [(b"accept", SSE)]),
        ((b"x-api-key", user_token.encode()), [(b"accept", b"application/json, text/event-stream")]),
        (bearer(user_token), []),
        (bearer(daemon_token), [(b"accept", b"*/*")]),
    ):
        status, headers, body = call(router, http_scope(channel(device.pk), *accept, credential),
                                     until=f"id: command:{command.pk}".encode())  # fmt: skip
        assert status == 200 and headers[b"content-type"] == SSE and headers[b"cache-control"] == b"no-cache"
        assert body.startswith(b": connected\n\nevent: command\n") and b"ratelimit-limit" in headers
    assert router.app.paths == []
    assert Device.objects.get(pk=device.pk).channel_id is not None
    tokens = ApiToken.objects.filter(key_hash__in=[token_hash(daemon_token), token_hash(user_token)])
    assert [token.last_used_at is not None for token in tokens] == [True, True]  # recorded by the open


def test_every_other_request_goes_to_django_untouched(router, user, device, other_device):
    device_token, user_token = make_token(user, device=device), make_token(user)
    reader = make_token(user, scopes=[Scope.READ])
    revoked = make_token(user)
    token_revoke(token=ApiToken.objects.get(key_hash=token_hash(revoked)))
    other_machine_token = make_token(user, device=Device.objects.create(user=user, name="desktop"))
    plain = [(b"accept", SSE), bearer(device_token)]
    refused = {
        "a query string": http_scope(channel(device.pk), *plain, query=b"since=3"),
        "Accept: JSON": http_scope(channel(device.pk), (b"accept", b"application/json"), bearer(device_token)),
        "no token": http_scope(channel(device.pk), (b"accept", SSE)),
        "an unknown token": http_scope(channel(device.pk), (b"accept", SSE), bearer("acp_unknown")),
        "a revoked token": http_scope(channel(device.pk), (b"accept", SSE), bearer(revoked)),
        "not Bearer": http_scope(channel(device.pk), (b"accept", SSE), (b"authorization", b"Basic abc")),
        "a read-only key (a channel takes the slot)": http_scope(channel(device.pk), (b"accept", SSE), bearer(reader)),
        "a header spelt with _": http_scope(channel(device.pk), *plain, (b"x_forwarded_proto", b"https")),
        "another user's machine": http_scope(channel(other_device.pk), (b"accept", SSE), bearer(user_token)),
        "the token's other machine": http_scope(channel(device.pk), (b"accept", SSE), bearer(other_machine_token)),
        "an unknown machine": http_scope(channel(uuid.uuid4()), (b"accept", SSE), bearer(user_token)),
        "a repeated header": http_scope(channel(device.pk), *plain, (b"accept", SSE)),
        "a host not allowed": http_scope(channel(device.pk), *plain, host=b"evil.example"),
        "a POST": http_scope(channel(device.pk), *plain, method="POST"),
        "another path": http_scope(f"/api/v1/machines/{device.pk}/launches", *plain),
    }
    for name, scope in refused.items():
        router.app.paths.clear()
        status, _, _ = call(router, scope)
        assert (status, router.app.paths) == (599, [scope["path"]]), name
    assert Device.objects.get(pk=device.pk).channel_id is None  # none of them opened it


def test_plain_http_where_https_is_required_goes_to_django(router, settings, user, device):
    settings.SECURE_SSL_REDIRECT = True
    plain = [(b"accept", SSE), bearer(make_token(user, device=device))]
    assert call(router, http_scope(channel(device.pk), *plain))[0] == 599
    settings.SECURE_HSTS_SECONDS = 3600
    status, headers, _ = call(router, http_scope(channel(device.pk), *plain, scheme="https"))
    assert status == 200 and headers[b"strict-transport-security"].startswith(b"max-age=3600")


def test_a_spent_budget_goes_to_django_which_answers_429(router, settings, user, device):
    settings.ACP_RATELIMIT_DEVICE = "2/hour"
    plain = [(b"accept", SSE), bearer(make_token(user, device=device))]
    assert [call(router, http_scope(channel(device.pk), *plain))[0] for _ in range(3)] == [200, 200, 599]


def test_a_connect_handed_on_to_django_is_counted_once(settings, user, device):
    """The fast path counts a connect before it knows whether it serves it; Django's answer uses that count."""
    settings.ACP_RATELIMIT_DEVICE = "3/hour"  # an hour's window: one that ended mid-test would refill the budget
    router = FastStreamRouter(OptimisedASGIHandler(), fast_streams())
    not_its_machine = Device.objects.create(user=user, name="desktop")
    raw = make_token(user, device=device)
    scope = http_scope(channel(not_its_machine.pk), (b"accept", SSE), bearer(raw))
    loop = asyncio.new_event_loop()  # one loop for the four, as in a server process
    try:
        answers = [loop.run_until_complete(asyncio.wait_for(serve(router, scope), 5)) for _ in range(4)]
    finally:
        loop.close()
    assert [status for status, _, _ in answers] == [404, 404, 404, 429]
    remaining = [dict((name.lower(), value) for name, value in headers.items()) for _, headers, _ in answers]
    assert [headers[b"ratelimit-remaining"] for headers in remaining] == [b"2", b"1", b"0", b"0"]
    token = ApiToken.objects.get(key_hash=token_hash(raw))
    assert token_usage(token, DAEMON, time.time()).count == 5  # the four, the 429 too, counted once each; and this


def test_connects_take_turns_and_one_that_waited_too_long_is_told_to_come_back(settings, user, device):
    """Two turns at once: a third connect waits; past the queue wait it is answered 503 with a Retry-After."""
    settings.ACP_CHANNEL_CONNECTS_AT_ONCE, settings.ACP_CHANNEL_CONNECT_QUEUE_WAIT = 2, 0.3
    settings.ACP_CHANNEL_CONNECT_BATCH = 1  # each connect a batch of its own: two opened at once, on two threads
    [channel_stream] = fast_streams()
    release, opening = threading.Event(), threading.Semaphore(0)

    def held_open(caller, **kwargs):  # holds its turn until the test lets go, then hands the request to Django
        opening.release()
        release.wait(10)

    router = FastStreamRouter(Django(), [dataclasses.replace(channel_stream, open=one_by_one(held_open))])
    scope = http_scope(channel(device.pk), (b"accept", SSE), bearer(make_token(user)))

    async def three_connects():
        first, second = (asyncio.ensure_future(serve(router, scope)) for _ in range(2))
        await asyncio.to_thread(lambda: opening.acquire(timeout=5) and opening.acquire(timeout=5))  # both turns taken
        third = await serve(router, scope)  # waits 0.3 s for a turn, then is refused
        release.set()
        return [*(await asyncio.gather(first, second)), third]

    first, second, (status, headers, body) = asyncio.run(asyncio.wait_for(three_connects(), 10))
    assert status == 503 and json.loads(body)["code"] == "service_unavailable"
    assert 5 <= int(headers[b"retry-after"]) <= 30
    assert first[0] == second[0] == 599  # had their turn (and went on to Django)
    assert router.app.paths == [scope["path"]] * 2


def test_of_two_connects_of_one_machine_the_last_to_arrive_holds_the_slot_though_it_opened_first(
    settings, user, device
):
    """Two turns at once: the connect that arrived first opens only after the second has (a daemon's own abandoned
    connect, say, which arrived long before); it does not take the live one's place, and is answered `replaced`."""
    settings.ACP_CHANNEL_CONNECTS_AT_ONCE, settings.ACP_CHANNEL_CONNECT_BATCH = 2, 1  # opened at once, on two threads
    [channel_stream] = fast_streams()
    abandoned, live = make_token(user, device=device), make_token(user, device=device)
    live_opened = threading.Event()

    def open_in_reverse(caller, *, arrived, **kwargs):
        if caller.auth.key_hash == token_hash(abandoned):
            live_opened.wait(5)
            arrived -= 1.0  # it arrived a second before the live one (arrivals a millisecond apart are a tie)
        stream = channel_open(caller, arrived=arrived, **kwargs)
        if caller.auth.key_hash == token_hash(live):
            live_opened.set()
        return stream

    router = FastStreamRouter(Django(), [dataclasses.replace(channel_stream, open=one_by_one(open_in_reverse))])

    def scope(raw):
        return http_scope(channel(device.pk), (b"accept", SSE), bearer(raw))

    async def two_connects():
        first = asyncio.ensure_future(serve(router, scope(abandoned), until=b"event: replaced"))
        await asyncio.sleep(0)  # the first has arrived (and waits for its open)
        second = await serve(router, scope(live))
        return await first, second

    (first_status, _, first_body), (second_status, _, second_body) = asyncio.run(asyncio.wait_for(two_connects(), 10))
    assert first_status == second_status == 200 and live_opened.is_set()
    assert b"event: replaced" in first_body and b"event:" not in second_body
    assert router.app.paths == []


def test_connects_are_paced_in_arrival_order_and_one_whose_slot_is_too_far_ahead_is_refused_at_once(
    settings, user, device
):
    """At 10 a second with 0.5 s of queue: of 9 connects arriving together, 6 get a slot (0, 0.1 … 0.5 s ahead) and
    are opened a tenth of a second apart; the other 3 are answered 503 before the last slot comes, told to come
    back after the slots already taken."""
    settings.ACP_CHANNEL_CONNECTS_PER_SECOND, settings.ACP_CHANNEL_CONNECT_QUEUE_WAIT = 10, 0.5
    settings.ACP_CHANNEL_CONNECTS_AT_ONCE, settings.ACP_CHANNEL_CONNECT_BATCH = 4, 1
    router, scope, opened = router_noting_opens(user, device)

    async def nine_connects():
        answered_at = {}

        async def connect(index):
            answer = await serve(router, scope)
            answered_at[index] = time.monotonic()
            return answer

        answers = await asyncio.gather(*(connect(i) for i in range(9)))
        return answers, answered_at

    arrived = time.monotonic()
    answers, answered_at = asyncio.run(asyncio.wait_for(nine_connects(), 10))
    opened_at = [at for at, _ in opened]
    refused = [i for i, (status, _, _) in enumerate(answers) if status == 503]
    assert [status for status, _, _ in answers] == [599] * 6 + [503] * 3  # arrival order
    slots = [arrived + 0.1 * n - 0.01 for n in range(6)]  # the pace (a timer may fire a little early)
    assert len(opened_at) == 6 and all(opened >= slot for opened, slot in zip(sorted(opened_at), slots, strict=True))
    assert max(answered_at[i] for i in refused) < opened_at[-1]  # refused at once, not after waiting
    for i in refused:
        status, headers, body = answers[i]
        assert json.loads(body)["code"] == "service_unavailable"
        assert 5 + 1 <= int(headers[b"retry-after"]) <= 30 + 1  # beyond the slots taken ahead (0.1 s of them)


def test_a_connect_whose_daemon_went_away_while_it_waited_its_turn_is_not_opened(settings, user, device):
    """One turn at a time: a second connect waits behind the first; its daemon leaves meanwhile. When the turn comes,
    nothing is opened for it (an open would have made it the machine's channel) and nothing is answered."""
    settings.ACP_CHANNEL_CONNECTS_AT_ONCE = 1
    [channel_stream] = fast_streams()
    release, holding, opened = threading.Event(), threading.Event(), []

    def held_open(caller, **kwargs):  # the first holds its turn until the test lets go; then Django answers
        opened.append(caller.auth.key_hash)
        holding.set()
        release.wait(10)

    router = FastStreamRouter(Django(), [dataclasses.replace(channel_stream, open=one_by_one(held_open))])
    first_token, second_token = make_token(user, device=device), make_token(user, device=device)

    async def scenario():
        first = asyncio.ensure_future(serve(router, http_scope(channel(device.pk), bearer(first_token))))
        await asyncio.to_thread(holding.wait, 5)
        reads, left, sent = [], asyncio.Event(), []

        async def receive():
            reads.append("waits")
            if len(reads) == 1:
                return {"type": "http.request", "body": b"", "more_body": False}
            await left.wait()
            reads.append("gone")
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        second = asyncio.ensure_future(router(http_scope(channel(device.pk), bearer(second_token)), receive, send))
        while len(reads) < 2:  # its request read, its end watched: it waits in line
            await asyncio.sleep(0)
        left.set()
        while reads[-1] != "gone":  # its end seen (the watch ends in the same step)
            await asyncio.sleep(0)
        release.set()
        await second
        return await first, sent

    (first_status, _, _), sent = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert first_status == 599 and sent == []
    assert opened == [token_hash(first_token)] and router.app.paths == [channel(device.pk)]


def test_a_stream_the_server_cancels_ends_cancelled_and_lets_go_of_its_machine(router, user, device):
    """Cancelled from elsewhere (the server stopping) rather than by its client leaving: the cancellation is not
    swallowed, and the stream's presence hold and subscription go with it."""
    waiters = get_listener().waiter_count()
    scope = http_scope(channel(device.pk), bearer(make_token(user, device=device)))

    async def scenario():
        connected = asyncio.Event()
        received = iter([{"type": "http.request", "body": b"", "more_body": False}])

        async def receive():
            return next(received, None) or await asyncio.Event().wait()  # the client never leaves

        async def send(message):
            if b": connected" in message.get("body", b""):
                connected.set()

        serving = asyncio.ensure_future(router(scope, receive, send))
        await connected.wait()
        held = get_presence().held()
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
        return held

    held = asyncio.run(asyncio.wait_for(scenario(), 10))
    channel_id = Device.objects.get(pk=device.pk).channel_id
    assert channel_id in held and channel_id not in get_presence().held()
    assert get_listener().waiter_count() == waiters


def test_connects_arriving_together_are_opened_together_on_one_thread_after_one_token_lookup(
    settings, monkeypatch, user, device
):
    """Five connects in one batch: the four usable ones each get their own machine's channel and its pending command;
    the unknown token goes on to Django. One request thread opened them all, after one lookup of their tokens, in
    one call of the channel's opener."""
    settings.ACP_CHANNEL_CONNECT_BATCH = 5
    machines = [device, *(Device.objects.create(user=user, name=f"machine {n}") for n in range(3))]
    commands = {}
    for machine in machines:
        session = local_session_create(user=user, thread=thread_create(user=user), device=machine, status="running")
        commands[machine.pk] = command_enqueue(session=session, command_type="pause")
    [channel_stream] = fast_streams()
    threads, lookups, opened = set(), [], []

    def open_noting_the_thread(requests):
        threads.add(threading.get_ident())
        opened.append(len(requests))
        return channels_open(requests)

    def counted_lookup(keys, lookup=fast_streams_module.tokens_by_hash):
        keys = list(keys)
        lookups.append(len(keys))
        return lookup(keys)

    monkeypatch.setattr(fast_streams_module, "tokens_by_hash", counted_lookup)
    router = FastStreamRouter(Django(), [dataclasses.replace(channel_stream, open=open_noting_the_thread)])
    connects = [
        (http_scope(channel(m.pk), bearer(make_token(user, device=m))), f"id: command:{commands[m.pk].pk}".encode())
        for m in machines
    ]
    connects.append((http_scope(channel(device.pk), bearer("acp_unknown")), b""))

    async def together():
        return await asyncio.gather(*(serve(router, scope, until) for scope, until in connects))

    answers = asyncio.run(asyncio.wait_for(together(), 10))
    assert [status for status, _, _ in answers] == [200] * 4 + [599]
    for machine, (_, _, body) in zip(machines, answers, strict=False):
        assert f"id: command:{commands[machine.pk].pk}".encode() in body
        assert body.count(b"event: command") == 1  # its own machine's command only
    assert len(threads) == 1 and lookups == [5] and opened == [4]
    assert router.app.paths == [channel(device.pk)]
    channel_ids = Device.objects.filter(pk__in=[m.pk for m in machines]).values_list("channel_id", flat=True)
    assert None not in channel_ids


def test_batches_are_paced_and_one_that_would_be_due_too_far_ahead_is_refused_at_once(settings, user, device):
    """At 10 connects a second in batches of 3, with 0.5 s of queue: of 9 connects arriving together, 3 are opened at
    once and 3 more 0.3 s later, each batch on one thread; the last 3, whose batch would be due 0.6 s ahead, are
    answered 503 before the second batch is opened."""
    settings.ACP_CHANNEL_CONNECTS_PER_SECOND, settings.ACP_CHANNEL_CONNECT_QUEUE_WAIT = 10, 0.5
    settings.ACP_CHANNEL_CONNECT_BATCH = 3
    router, scope, opened = router_noting_opens(user, device)

    async def nine_connects():
        async def connect():
            answer = await serve(router, scope)
            return answer, time.monotonic()

        return await asyncio.gather(*(connect() for _ in range(9)))

    arrived = time.monotonic()
    answers = asyncio.run(asyncio.wait_for(nine_connects(), 10))
    assert [status for (status, _, _), _ in answers] == [599] * 6 + [503] * 3  # arrival order
    first, second = sorted(opened)[:3], sorted(opened)[3:]
    assert len(second) == 3 and len({ident for _, ident in first}) == len({ident for _, ident in second}) == 1
    assert all(at < arrived + 0.25 for at, _ in first)  # at once (a batch at most every 0.3 s)
    assert all(at >= arrived + 0.3 - 0.01 for at, _ in second)  # the pace (a timer may fire a little early)
    assert max(answered for (status, _, _), answered in answers if status == 503) < second[0][0]
    for (_, headers, body), _ in answers[6:]:
        assert json.loads(body)["code"] == "service_unavailable"
        assert 5 + 1 <= int(headers[b"retry-after"]) <= 30 + 1  # beyond the batches due ahead (0.1 s of them)


def test_connects_slower_than_the_pace_go_alone_each_at_once_and_still_paced(settings, user, device):
    """At 10 a second in batches of 8: connects made one after another (each once the last was answered) are not held
    back to a whole batch's share of the pace (0.8 s apart) but go alone, a connect's share (0.1 s) apart."""
    settings.ACP_CHANNEL_CONNECTS_PER_SECOND, settings.ACP_CHANNEL_CONNECT_BATCH = 10, 8
    router, scope, opened = router_noting_opens(user, device)

    async def one_after_another():
        for _ in range(4):
            await serve(router, scope)

    asyncio.run(asyncio.wait_for(one_after_another(), 10))
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(opened)]
    assert len(gaps) == 3 and all(0.1 - 0.01 <= gap < 0.4 for gap in gaps), gaps


def test_a_connect_cancelled_while_its_batch_opens_lets_go_of_the_stream_opened_for_it(user, device):
    """The server stops (cancels the connect) while its batch is on the request thread: the stream opened for it
    meanwhile is closed, not left subscribed to its machine's wake-ups."""
    [channel_stream] = fast_streams()
    opening, release, opened = threading.Event(), threading.Event(), threading.Event()

    def held_open(caller, **kwargs):
        opening.set()
        release.wait(10)
        stream = channel_open(caller, **kwargs)
        opened.set()
        return stream

    router = FastStreamRouter(Django(), [dataclasses.replace(channel_stream, open=one_by_one(held_open))])
    waiters = get_listener().waiter_count()
    scope = http_scope(channel(device.pk), bearer(make_token(user, device=device)))

    async def scenario():
        connecting = asyncio.ensure_future(serve(router, scope))
        await asyncio.to_thread(opening.wait, 5)
        connecting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await connecting
        release.set()
        await asyncio.to_thread(opened.wait, 5)  # opened on the thread (subscribed)…
        while get_listener().waiter_count() != waiters:  # …then let go of here
            await asyncio.sleep(0.001)

    asyncio.run(asyncio.wait_for(scenario(), 10))
    assert Device.objects.get(pk=device.pk).channel_id is not None and router.app.paths == []


def test_an_error_opening_one_connects_stream_is_raised_to_it_alone_and_the_others_of_its_batch_are_served(
    settings, user, device
):
    """The channels of a batch are opened together; an error reading what is pending for one of them (its first
    fetch) is raised to that connect alone, as it would be without batches, and the others are served."""
    settings.ACP_CHANNEL_CONNECT_BATCH = 2
    second = Device.objects.create(user=user, name="second")
    [channel_stream] = fast_streams()

    def failing_fetch():
        raise RuntimeError("the fetch failed")

    def opened_with_a_failing_fetch_for_the_first(requests):
        streams = channels_open(requests)
        return [
            dataclasses.replace(stream, fetch=failing_fetch) if request.kwargs["machine_id"] == device.pk else stream
            for request, stream in zip(requests, streams, strict=True)
        ]

    router = FastStreamRouter(
        Django(), [dataclasses.replace(channel_stream, open=opened_with_a_failing_fetch_for_the_first)]
    )
    scopes = [http_scope(channel(m.pk), bearer(make_token(user, device=m))) for m in (device, second)]
    waiters = get_listener().waiter_count()

    async def together():
        return await asyncio.gather(*(serve(router, scope) for scope in scopes), return_exceptions=True)

    failed, served = asyncio.run(asyncio.wait_for(together(), 10))
    assert isinstance(failed, RuntimeError) and served[0] == 200
    assert get_listener().waiter_count() == waiters  # the failed one's subscription let go of too


def test_an_error_of_the_opener_is_raised_to_every_connect_of_its_call(settings, user, device):
    settings.ACP_CHANNEL_CONNECT_BATCH = 2
    second = Device.objects.create(user=user, name="second")
    [channel_stream] = fast_streams()

    def failing_opener(requests):
        raise RuntimeError("the open failed")

    router = FastStreamRouter(Django(), [dataclasses.replace(channel_stream, open=failing_opener)])
    scopes = [http_scope(channel(m.pk), bearer(make_token(user, device=m))) for m in (device, second)]

    async def together():
        return await asyncio.gather(*(serve(router, scope) for scope in scopes), return_exceptions=True)

    answers = asyncio.run(asyncio.wait_for(together(), 10))
    assert all(isinstance(answer, RuntimeError) for answer in answers)
    assert list(Device.objects.filter(pk__in=[device.pk, second.pk]).values_list("channel_id", flat=True)) == [None] * 2
