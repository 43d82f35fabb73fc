"""A request served by the optimised ASGI handler leaves no reference cycle behind: what it made is freed when it
ends, not by a pass of the cyclic collector, whose passes held a worker with 10,000 machine channels for 10-150 ms
(bench/channel.py). See acp/serving/cycles.py and acp.api.serializers.WeaklyBoundFieldsMixin.

Each case runs once to warm up, then once with the collector saving what it would free (`gc.DEBUG_SAVEALL`).
"""

import asyncio
import gc
import json
import uuid
from collections import Counter

import pytest

from acp.serving.fast_streams import FastStreamRouter, fast_streams
from acp.serving.handler import OptimisedASGIHandler
from commands.services import local_session_create, thread_create
from sessions.api.channel import MachineChannel
from sessions.selectors import ChannelState
from tests.bindings.helpers import sessions_url
from tests.commands.conftest import control_url, make_command
from tests.conftest import make_token
from tests.sessions.test_fast_streams import bearer, channel, http_scope, serve

pytestmark = pytest.mark.django_db(transaction=True)

PLAN = {"files": [{"path": "a.py", "sha": "abc", "size": 1}]}


async def call(app, method: str, path: str, token: str, body: dict | None = None, query: bytes = b"") -> int:
    """Send a request with a JSON body (or none) and read its answer to the end, as uvicorn would."""
    content = json.dumps(body).encode() if body is not None else b""
    scope = http_scope(
        path,
        bearer(token),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        query=query,
        method=method,
    )
    messages = [{"type": "http.request", "body": content, "more_body": False}]
    sent = []
    answered = asyncio.Event()

    async def receive():
        if messages:
            return messages.pop()
        await answered.wait()  # as uvicorn: once the answer is sent, the request's `receive` says it is over
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            answered.set()

    await app(scope, receive, send)
    return sent[0]["status"]


def cyclic_garbage(run) -> list:
    """What `run()` leaves that only the cyclic collector would free."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        run()
        gc.collect()
        return list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def described(garbage: list) -> str:
    return ", ".join(f"{count} {name}" for name, count in Counter(type(o).__qualname__ for o in garbage).most_common())


@pytest.fixture(autouse=True)
def optimised_serving(settings):
    """What is measured is the optimised serving's (CI runs tests/acp with ACP_SERVING=stock too, where Django's own
    compiler leaves a cycle per query with select_related: a recursive closure in SQLCompiler.get_select)."""
    settings.ACP_SERVING = "optimised"


@pytest.fixture
def loop():
    """One event loop for all of a test's requests, as in a server process."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()


@pytest.fixture
def work(user, device, environment, project):
    """A running session on `device` with a command pending, a binding, and the user's and the device's tokens."""
    from bindings.models import WorkspaceBinding

    thread = thread_create(user=user, environment=environment, title="fix the build")
    session = local_session_create(user=user, thread=thread, device=device, status="running")
    binding = WorkspaceBinding.objects.create(
        user=user, device=device, environment=environment, project=project, name="acp", local_path="/home/alice/acp"
    )
    return {
        "session": session,
        "binding": binding,
        "device": device,
        "user_token": make_token(user),
        "device_token": make_token(user, device=device),
    }


def command_create(app, work):
    path = control_url(work["session"])
    return call(app, "POST", path, work["user_token"], {"commandType": "message", "payload": {"text": "hi"}})


def command_ack(app, work):
    command = make_command(work["session"])
    path = f"/v1/threads/{command.thread_id}/local-sessions/{command.session_id}/control/{command.id}/ack"
    return call(app, "POST", path, work["device_token"], {})


def launch_poll(app, work):
    return call(app, "GET", f"/api/v1/machines/{work['device'].id}/launches", work["device_token"], query=b"wait=0")


def launch_poll_waiting(app, work):
    """A long-poll that waits out its second with nothing to deliver."""
    return call(app, "GET", f"/api/v1/machines/{work['device'].id}/launches", work["device_token"], query=b"wait=1")


def events_ingest(app, work):
    """A daemon's timeline batch: a list of events, each through a nested serializer."""
    session = work["session"]
    events = [{"type": "output", "sessionId": str(session.id), "data": {"line": f"line {n}"}} for n in range(3)]
    path = f"/v1/threads/{session.thread_id}/events/ingest"
    return call(app, "POST", path, work["device_token"], {"events": events})


def push_prepare(app, work):
    body = {"planSignature": f"sig-{uuid.uuid4()}", "plan": PLAN}  # a new plan each time: prepared anew, 201
    return call(app, "POST", sessions_url("push", work["binding"].id), work["user_token"], body)


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (command_create, 201),
        (command_ack, 200),
        (launch_poll, 200),
        (launch_poll_waiting, 200),
        (events_ingest, 200),
        (push_prepare, 201),
    ],
    ids=["command create", "command ack", "launch poll", "launch poll waiting", "events ingest", "push prepare"],
)
def test_a_request_leaves_no_reference_cycle(loop, work, request_, status):
    app = OptimisedASGIHandler()

    def run():
        assert loop.run_until_complete(request_(app, work)) == status

    run()  # the first request of a kind fills caches (URL resolver, serializers' class attributes)
    garbage = cyclic_garbage(run)
    assert garbage == [], described(garbage)


def test_a_channel_fetch_leaves_no_reference_cycle(work):
    """A machine channel's fetch serialises every pending command it sends (off any request)."""
    for _ in range(2):
        make_command(work["session"])
    channel = MachineChannel(work["device"].id, uuid.uuid4(), None, opened=ChannelState(True, True, False, True))
    batch = None

    def fetch():
        nonlocal batch
        batch = channel()  # as the open read it: commands pending

    garbage = cyclic_garbage(fetch)
    assert len(batch.messages) == 2
    assert garbage == [], described(garbage)


def test_a_channel_connect_leaves_no_reference_cycle(loop, work):
    app = FastStreamRouter(OptimisedASGIHandler(), fast_streams())
    token = work["device_token"]

    def run():  # open the machine's channel on the fast path, then go away once it says it is connected
        status, _, body = loop.run_until_complete(serve(app, http_scope(channel(work["device"].id), bearer(token))))
        assert status == 200 and body.startswith(b": connected")

    run()
    garbage = cyclic_garbage(run)
    assert garbage == [], described(garbage)
