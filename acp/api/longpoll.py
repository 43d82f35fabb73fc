"""The API's long-poll protocol: a DRF view returns a `LongPollResponse`, and `long_poll_view` waits for its answer.

The waiting itself (`wait_for`) holds neither a request thread nor a database connection: it subscribes to a key
(acp/realtime.py wakes it when a writer notifies that key) and re-checks. When the server shuts down (acp/shutdown.py)
every waiter answers at once.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from acp.api.pagination import MAX_LIMIT
from acp.api.serializers import Serializer
from acp.db_release import run_released
from acp.realtime import recheck_interval, subscribe
from acp.serving.cycles import release_drf_response
from acp.serving.request_threads import released_request_thread, run_in_background
from acp.shutdown import is_shutting_down

Check = Callable[[], Any]  # returns `(status, data)`; a check returns None while there is nothing yet


@dataclass
class LongPoll:
    """What to wait for: `check()` until it gives an answer, else `on_timeout()` after `timeout` seconds.

    The callables are plain synchronous functions; they run in a worker thread and must not leave a transaction
    open, nor use the DRF view or its request (`long_poll_view` lets go of them before the wait: close over what
    they need). `on_shutdown` answers when the server stops meanwhile (by default the timeout's answer).
    """

    key: str
    timeout: float
    check: Check
    on_timeout: Check
    on_shutdown: Check | None = None
    on_answer: Callable[[int, str], None] | None = None  # called in a worker thread with the answer's status and JSON


class LongPollResponse(Response):
    """A DRF view's answer "wait for `poll`"; only `long_poll_view` can serve it."""

    def __init__(self, poll: LongPoll):
        super().__init__()
        self.poll = poll

    @property
    def rendered_content(self):
        raise ImproperlyConfigured("A LongPollResponse must be served through acp.api.longpoll.long_poll_view.")


class PollParamsSerializer(Serializer):
    """`limit` and `wait` of every long-poll; a `wait` above ACP_LONG_POLL_MAX_WAIT is refused (400), not cut."""

    limit = serializers.IntegerField(min_value=1, max_value=MAX_LIMIT, default=50)
    wait = serializers.FloatField(min_value=0, default=0)

    def validate_wait(self, value):
        if value > settings.ACP_LONG_POLL_MAX_WAIT:
            raise serializers.ValidationError(f"Ensure this value is at most {settings.ACP_LONG_POLL_MAX_WAIT:g}.")
        return value


def poll_parameters(what: str) -> list[OpenApiParameter]:
    """The schema of `PollParamsSerializer`'s query parameters, for a poll of `what` (e.g. "commands")."""
    max_wait = f"{settings.ACP_LONG_POLL_MAX_WAIT:g}"
    return [
        OpenApiParameter("limit", OpenApiTypes.INT, description=f"How many {what}, 1–{MAX_LIMIT} (default 50)."),
        OpenApiParameter(
            "wait",
            OpenApiTypes.DOUBLE,
            description=(
                f"Seconds to wait when there are no {what} yet (default 0). At most {max_wait} "
                "(`ACP_LONG_POLL_MAX_WAIT`): more is refused with 400."
            ),
        ),
    ]


def long_poll_view(drf_view):
    """Wrap `drf_view` (from `.as_view()`): when it answers a `LongPollResponse`, wait for its poll and answer
    with the poll's `(status, data)`.

    Auth, validation and 404s stay in the DRF view; the wrapper keeps the view's `cls`, so the
    OpenAPI schema documents it like any other DRF endpoint.
    """

    @functools.wraps(drf_view)
    async def view(request, *args, **kwargs):
        response = await sync_to_async(run_released)(lambda: drf_view(request, *args, **kwargs))
        if not isinstance(response, LongPollResponse):
            return response
        poll = response.poll
        # The poll's callables are plain functions (see LongPoll): the DRF view, its request and the renderer
        # context need not live through the wait, and are freed now rather than by the cyclic collector.
        release_drf_response(response)
        del response
        status_code, data = await wait_for(poll)
        answer = JsonResponse(data, status=status_code, safe=False, encoder=JSONEncoder)
        if poll.on_answer is not None:
            await sync_to_async(run_released)(lambda: poll.on_answer(status_code, answer.content.decode()))
        return answer

    return view


async def wait_for(poll: LongPoll) -> Any:
    """Run `poll` to its end: the first non-None `check()`, else `on_timeout()` after `poll.timeout`, or
    `on_shutdown()` as soon as the server shuts down.

    The request's thread goes back to the pool meanwhile; the checks run as background work (`run_in_background`).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + poll.timeout
    async with released_request_thread():
        subscription = await run_in_background(lambda: subscribe(poll.key))
        try:
            while True:
                if is_shutting_down():
                    return await _run(poll.on_shutdown or poll.on_timeout)
                result = await _run(poll.check)
                if result is not None:
                    return result
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return await _run(poll.on_timeout)
                await subscription.wait(min(remaining, recheck_interval()))
        finally:
            subscription.close()


async def _run(function: Check) -> Any:
    return await run_in_background(function)
