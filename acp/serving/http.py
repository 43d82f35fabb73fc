"""How a worker reads HTTP: uvicorn's httptools protocol, with a limit on a request head still arriving.

httptools (llhttp, in C) takes a request in for less of the event loop's CPU than h11 (README, "Why ASGI").
Unlike h11, it buffers a head that never ends without limit, so this protocol counts what arrives while a head
(or a chunked body's trailers, which are headers too) is incomplete and answers `431` once that passes
ACP_MAX_HEADER_BYTES, as h11 refused one still arriving past its 16 KB. A head that arrives whole is checked by
acp/asgi_guards.py, as before.

Serve with it: `gunicorn acp.asgi:application -k acp.serving.worker.UvicornWorker`, or
`uvicorn acp.asgi:application --http acp.serving.http:HttpToolsProtocol` (uvicorn's own `auto` would pick
httptools without the limit).
"""

from __future__ import annotations

from django.conf import settings
from uvicorn.protocols.http import httptools_impl

from acp.asgi_guards import header_limit_message, refusal_body

PROTOCOL = "acp.serving.http:HttpToolsProtocol"
FEED_SLICE = 4096  # bytes
UPGRADE_WITH_BODY = "This server does not upgrade connections, and a request asking it to cannot carry a body."


class HttpToolsProtocol(httptools_impl.HttpToolsProtocol):
    """`_head_bytes`: what arrived since the current head (or trailers) began, None while none is arriving."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._head_bytes: int | None = 0

    def data_received(self, data: bytes) -> None:
        """Fed to the parser a slice at a time: where a read ends one message and begins the next head, or ends a
        chunked body and begins its trailers, the count cannot tell where in the read that happened, so it is off
        by at most a slice (a read is up to 256 KB)."""
        if len(data) <= FEED_SLICE:
            self._feed(data)
            return
        view = memoryview(data)
        for start in range(0, len(data), FEED_SLICE):
            self._feed(view[start : start + FEED_SLICE])
            if self.transport.is_closing() or self.parser.should_upgrade():
                return  # refused, or an upgrade: the parser reads no further, as with the read whole

    def _feed(self, data) -> None:
        if self._head_bytes is not None:
            self._head_bytes += len(data)
        super().data_received(data)
        self._refuse_a_head_over_the_limit()

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        if self.parser.should_upgrade() and not self._should_upgrade() and _declares_body(self.headers):
            # llhttp would skip the body of a request asking for an upgrade: the view would get none.
            self._refuse(400, UPGRADE_WITH_BODY, "invalid_request", {})
            return
        super().on_headers_complete()

    def on_chunk_header(self) -> None:
        self._head_bytes = 0  # the last chunk's is followed by the trailers, counted as a head's fields

    def on_body(self, body: bytes) -> None:
        self._head_bytes = None
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_bytes = 0  # the next request's head, if one follows on this connection

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._refuse_a_head_over_the_limit()  # one held back while the answer before it was going out

    def _refuse_a_head_over_the_limit(self) -> None:
        limit = settings.ACP_MAX_HEADER_BYTES
        if self._head_bytes is None or self._head_bytes <= limit or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.more_body and not self.cycle.response_complete:
            self.flow.pause_reading()  # the head of the next request: refused in order, once this one is answered
            return
        self._refuse(431, header_limit_message(limit), "request_header_fields_too_large", {"limit": limit})

    def _refuse(self, status: int, message: str, code: str, details: dict) -> None:
        """Answer with the API's error body and close the connection (what follows on it is not read)."""
        body = refusal_body(message, code, details)
        head = [
            httptools_impl.STATUS_LINE[status],
            *(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers),
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def _declares_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False
