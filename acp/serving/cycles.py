"""Breaking the reference cycles a request leaves, once its answer is sent, so that what it made is freed at once
rather than by a pass of the cyclic collector: ~200 objects per request, which made those passes hold a worker with
10,000 machine channels for 10-150 ms (the tail of a command's create → event, bench/channel.py). The serializers'
own cycles are broken where they are made (acp.api.serializers.WeaklyBoundFieldsMixin);
tests/acp/test_request_garbage.py checks that the hot requests leave none.
"""

# What the stock middleware hangs on a request that leads back to it: the lazy user (a closure over the request),
# `auser` (a partial of it), the messages' storage (which holds the request).
REQUEST_BACK_REFERENCES = ("user", "auser", "_messages")


def release_request(request, response) -> None:
    """The middleware's back references on `request`, and DRF's around `response` (`release_drf_response`)."""
    for name in REQUEST_BACK_REFERENCES:
        request.__dict__.pop(name, None)
    release_drf_response(response)


def release_drf_response(response) -> None:
    """A DRF response's renderer context (the view, the request, the response itself), the view (its request, its
    response, its handlers bound to it) and the request's parser context (the view, the request itself). Only once
    the view's work is over: whatever it still runs reads them."""
    context = response.__dict__.pop("renderer_context", None) or {}
    if (drf_request := context.get("request")) is not None:
        drf_request.__dict__.pop("parser_context", None)
    if (view := context.get("view")) is not None:
        view.__dict__.clear()
