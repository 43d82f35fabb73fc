"""How a worker reads HTTP: uvicorn's httptools protocol, with a limit on a request head still arriving.

httptools (llhttp, in C) took a machine channel's connect in for about 0.3 ms less of the event loop's CPU than
h11 (README, "Figures"). Unlike h11, it buffers a head that never ends without limit, so this protocol counts what
arrives while a head is incomplete and answers `431` once that passes ACP_MAX_HEADER_BYTES, as h11 refused one
still arriving past its 16 KB. A head that arrives whole is checked by acp/asgi_guards.py, as before.

Serve with it: `gunicorn acp.asgi:application -k acp.serving.worker.UvicornWorker`, or
`uvicorn acp.asgi:application --http acp.serving.http:HttpToolsProtocol` (uvicorn's own `auto` would pick
httptools without the limit).
"""

from __future__ import annotations

from django.conf import settings
from uvicorn.protocols.http import httptools_impl

from acp.asgi_guards import header_limit_message, refusal_body

PROTOCOL = "acp.serving.http:HttpToolsProtocol"


class HttpToolsProtocol(httptools_impl.HttpToolsProtocol):
    """`_head_bytes`: what arrived since the current request's head began, None once it is complete."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._head_bytes: int | None = 0

    def data_received(self, data: bytes) -> None:
        if self._head_bytes is not None:
            self._head_bytes += len(data)
        super().data_received(data)
        limit = settings.ACP_MAX_HEADER_BYTES
        if self._head_bytes is not None and self._head_bytes > limit and not self.transport.is_closing():
            self._refuse_head(limit)

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_bytes = 0  # the next request's head, if one follows on this connection

    def _refuse_head(self, limit: int) -> None:
        body = refusal_body(header_limit_message(limit), "request_header_fields_too_large", {"limit": limit})
        head = [
            httptools_impl.STATUS_LINE[431],
            *(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers),
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
