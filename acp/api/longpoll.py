"""Serve a DRF view as an async Django view so its long-polls wait without holding a thread."""

import functools

from asgiref.sync import sync_to_async
from django.http import JsonResponse
from rest_framework.utils.encoders import JSONEncoder

from acp.realtime import _run_released, wait_for


def long_poll_view(drf_view):
    """Wrap `drf_view` (from `.as_view()`): when its response carries a `long_poll`
    (`acp.realtime.LongPoll`), wait for it and answer with its `(status, data)` result.

    Auth, validation and 404s stay in the DRF view; the wrapper keeps the view's `cls`, so the
    OpenAPI schema documents it like any other DRF endpoint.
    """

    @functools.wraps(drf_view)
    async def view(request, *args, **kwargs):
        response = await sync_to_async(_run_released)(lambda: drf_view(request, *args, **kwargs))
        poll = getattr(response, "long_poll", None)
        if poll is None:
            return response
        del response  # the DRF view's request, view and renderer context need not live through the wait
        status_code, data = await wait_for(poll)
        answer = JsonResponse(data, status=status_code, safe=False, encoder=JSONEncoder)
        if poll.on_answer is not None:
            await sync_to_async(_run_released)(lambda: poll.on_answer(status_code, answer.content.decode()))
        return answer

    return view
