"""Limits on a request's headers and body, applied before Django (or a request thread) is involved.

Django's ASGI handler reads the whole body before any middleware runs, on a request thread already lent to it
(acp/request_threads.py), and uvicorn sets no time limit on a body: a client that declares 1,000 bytes and sends
10 would hold that thread for as long as it keeps the connection open. So the body is read here, in the event
loop: it must arrive whole within ACP_BODY_READ_TIMEOUT seconds (else 408) and be at most ACP_MAX_BODY_BYTES
(else 413, answered on the declared Content-Length without reading a byte, or as soon as a chunked body passes
the limit). Either refusal closes the connection, since the rest of the body is never read. A chunked body, read
whole, is handed on with a Content-Length (DRF reads a body by it).

Headers: the server's parser (acp/serving/http.py) refuses a head still arriving past ACP_MAX_HEADER_BYTES; one
that arrives whole in a single read (up to 256 KB) is parsed, so a block over the limit is answered 431 here.
"""

from __future__ import annotations

import asyncio
import json

from django.conf import settings


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


class RequestBodyGuard:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        header_bytes = sum(len(name) + len(value) + 4 for name, value in scope.get("headers", ()))
        if header_bytes > settings.ACP_MAX_HEADER_BYTES:
            return await _refuse(
                send,
                431,
                header_limit_message(settings.ACP_MAX_HEADER_BYTES),
                "request_header_fields_too_large",
                settings.ACP_MAX_HEADER_BYTES,
            )
        limit = settings.ACP_MAX_BODY_BYTES
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            return await _refuse(send, 413, f"The request body exceeds {limit} bytes.", "payload_too_large", limit)
        try:
            async with asyncio.timeout(settings.ACP_BODY_READ_TIMEOUT):
                body = await _read_body(receive, limit)
        except TimeoutError:
            timeout = settings.ACP_BODY_READ_TIMEOUT
            return await _refuse(send, 408, f"The request body did not arrive within {timeout:g} s.", "request_timeout")
        except _TooLarge:
            return await _refuse(send, 413, f"The request body exceeds {limit} bytes.", "payload_too_large", limit)
        except _Disconnected:
            return None  # nobody left to answer
        if declared is None and body:
            scope = _with_content_length(scope, len(body))
        request = {"type": "http.request", "body": body, "more_body": False}
        return await self.app(scope, replaying(request, receive), send)


def _with_content_length(scope, length: int):
    """A chunked body, read whole: DRF reads a body by its Content-Length, and without one saw none (a chunked
    PATCH changed nothing and answered 200)."""
    return {**scope, "headers": [*scope["headers"], (b"content-length", str(length).encode())]}


async def _read_body(receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replaying(message: dict, receive):
    """The app's `receive`: `message`, read already (the request's body as one message), then the connection's
    own (a disconnect)."""
    pending = [message]

    async def replay():
        return pending.pop() if pending else await receive()

    return replay


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed Content-Length before the app sees it
    return None


async def _refuse(send, status: int, message: str, code: str, limit: int | None = None) -> None:
    await refuse(send, status, message, code, {"limit": limit} if limit else {})


def header_limit_message(limit: int) -> str:
    return f"The request's headers exceed {limit} bytes."


def refusal_body(message: str, code: str, details: dict) -> bytes:
    """The API's error body, `{error, code, details}`."""
    return json.dumps({"error": message, "code": code, "details": details}).encode()


async def refuse(send, status: int, message: str, code: str, details: dict, headers: tuple = ()) -> None:
    """Answer an ASGI request with the API's error body and close the connection."""
    body = refusal_body(message, code, details)
    fixed = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send(
        {"type": "http.response.start", "status": status, "headers": [*fixed, *headers, (b"connection", b"close")]}
    )
    await send({"type": "http.response.body", "body": body})
