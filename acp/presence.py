"""Presence from machine channels: a process keeps every machine whose channel it holds online, in one statement.

A channel registers its id while it is open (`hold`, entered on the event loop); while any is held, a task on that
loop marks all of them seen every `ACP_CHANNEL_PRESENCE_INTERVAL` seconds with one UPDATE
(`device_channels_refresh`, run as background work on a lent request thread), so an idle connected machine costs
no write and no thread of its own, and reads offline `ACP_DEVICE_OFFLINE_AFTER` seconds after its channel closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections import Counter

from django.conf import settings

from acp.services import device_channels_refresh
from acp.serving.request_threads import run_in_background

logger = logging.getLogger(__name__)


class ChannelPresence:
    def __init__(self):
        self._lock = threading.Lock()
        self._held: Counter[uuid.UUID] = Counter()
        self._refresher: asyncio.Task | None = None

    @contextlib.contextmanager
    def hold(self, channel_id: uuid.UUID):
        """Keep the channel's machine online while the block runs."""
        with self._lock:
            self._held[channel_id] += 1
        self._keep_refreshing()
        try:
            yield
        finally:
            with self._lock:
                self._held[channel_id] -= 1
                if self._held[channel_id] <= 0:
                    del self._held[channel_id]

    def held(self) -> list[uuid.UUID]:
        with self._lock:
            return list(self._held)

    def refresh(self) -> int:
        """Mark seen the machines of every channel held now; how many were."""
        channel_ids = self.held()
        return device_channels_refresh(channel_ids=channel_ids) if channel_ids else 0

    def _keep_refreshing(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # held outside an event loop (a test's own calls): refreshed by hand
        refresher = self._refresher
        if refresher is None or refresher.done() or refresher.get_loop() is not loop:
            self._refresher = loop.create_task(self._refresh_while_held(), name="acp-presence")

    async def _refresh_while_held(self) -> None:
        while self.held():
            await asyncio.sleep(settings.ACP_CHANNEL_PRESENCE_INTERVAL)
            try:
                await run_in_background(self.refresh)  # which gives the connection back after
            except Exception:  # the database is away: the next round tries again
                logger.warning("acp presence: refreshing the open channels' machines failed", exc_info=True)


_presence = ChannelPresence()


def get_presence() -> ChannelPresence:
    return _presence
