"""A server process's graceful stop: on SIGTERM every waiting long-poll is answered at once.

uvicorn (alone or as gunicorn's worker) stops accepting on SIGTERM and then waits for the requests in flight; a
long-poll would hold it for up to its whole wait. `GracefulShutdown` wraps the ASGI application: at the ASGI
lifespan startup (after uvicorn has installed its own signal handlers) it chains a handler for SIGTERM and
SIGINT that marks the process as shutting down and wakes every waiter (acp/api/longpoll.py answers them), and,
should requests still run `ACP_SHUTDOWN_GRACE` seconds later, makes uvicorn stop waiting for them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading

from django.conf import settings
from django.db import connection

from acp.realtime import get_listener

logger = logging.getLogger(__name__)

_shutting_down = threading.Event()


def is_shutting_down() -> bool:
    return _shutting_down.is_set()


def begin_shutdown() -> None:
    """Answer every waiter now (each re-checks, sees the flag, and answers as at its deadline)."""
    _shutting_down.set()
    get_listener().wake_everyone()


class GracefulShutdown:
    """ASGI middleware: handle the lifespan protocol; at its startup install the SIGTERM hook and, on PostgreSQL,
    start the process's LISTEN connection (acp/realtime.py)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                install_signal_handlers(asyncio.get_running_loop())
                if connection.vendor == "postgresql":
                    # Listening from the start: the first waiter need not wait for it, and the process runs the
                    # same threads before its first channel as with 10,000 (bench/channel.py).
                    get_listener().start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def install_signal_handlers(loop: asyncio.AbstractEventLoop) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # signals reach the main thread only; a server run elsewhere keeps its own behaviour
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if callable(previous):
            signal.signal(signum, _chained(loop, previous))


def _chained(loop: asyncio.AbstractEventLoop, server_handler):
    def on_loop():
        if not _shutting_down.is_set():
            logger.info("shutting down: answering every waiting long-poll")
            begin_shutdown()
            loop.call_later(settings.ACP_SHUTDOWN_GRACE, _force_exit, server_handler)

    def handle(signum, frame):
        # A signal handler may interrupt the loop's thread anywhere (inside a lock): do the work on the loop.
        loop.call_soon_threadsafe(on_loop)
        server_handler(signum, frame)  # the server stops accepting and waits for the requests in flight

    return handle


def _force_exit(server_handler) -> None:
    logger.warning("shutting down: requests still running after ACP_SHUTDOWN_GRACE; closing them")
    # uvicorn: a SIGINT while already exiting means "stop waiting for the requests in flight".
    server_handler(signal.SIGINT, None)
