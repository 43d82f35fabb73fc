"""The cyclic garbage collector in a server process that holds thousands of waiters and machine channels.

CPython collects a generation by walking every object in it. A process holding 10,000 channels holds ~1.1 million
tracked objects (~107 a channel) that nothing will ever free but their channel's end, which frees them by reference
counting (tests/acp/test_request_garbage.py: a channel, and each hot request, leaves no reference cycle). Left to
CPython's generations, those objects are walked again and again: a young pass starts when allocations outnumber
deallocations by the young threshold, and while channels close as fast as they open (a reconnect storm), or each
keepalive's waiter replaces the last one's (idle channels), that count hardly moves while the young generation fills
with every object made meanwhile; the first pass then walks them all (0.70 s once a storm's closes stopped, 47–73 ms
between idle windows), and the middle and full passes walk them again later (README, "The collector walks each
object once").

So here (`SurvivorFreezer`), every ACP_GC_FREEZE_INTERVAL seconds a thread collects the young and middle generations
(what was made since the last round: a short walk) and freezes what survived (`gc.freeze()`: the permanent
generation, which no pass walks; an object there is still freed when its last reference goes). What a pass must
walk is then at most a round's worth of objects. The price is that a reference cycle made garbage after it was
frozen is not freed by any pass: so once the process's memory blocks have grown by half since the last full
collection, everything is unfrozen and collected once (as CPython's own rule runs a full pass when the objects
promoted since the last one reach a quarter of them). With the channels freed by reference counting, that happens
as their number grows (a worker's first 10,000 channels: four or five passes, the last of 0.4–0.6 s), not as they
come and go.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time

from django.conf import settings

logger = logging.getLogger(__name__)

# A full collection once the process's small memory blocks have grown by this share since the last one.
FULL_PASS_GROWTH = 0.5


class SurvivorFreezer:
    """Each `run_round()`: collect the young and middle generations, then freeze what survived; and a full collection
    once the process's small memory blocks (`sys.getallocatedblocks()`, which frozen garbage holds like any other
    object) have grown by `growth` since the last one. Counting the frozen objects themselves walks them all (~130 ms
    with 10,000 channels held, long enough to show in the prepares' p99); the blocks take 0.1–0.3 ms."""

    def __init__(self, *, growth: float = FULL_PASS_GROWTH):
        self.growth = growth
        self.full_passes = 0
        self._allowance = self._blocks_after_full_pass()

    def run_round(self) -> None:
        gc.collect(1)  # what survives joins the oldest generation, all of which is frozen with it
        gc.freeze()
        blocks = sys.getallocatedblocks()
        if blocks > (1 + self.growth) * self._allowance:
            self._full_pass(blocks)

    def _full_pass(self, blocks: int) -> None:
        before, started = self._allowance, time.monotonic()
        self._allowance = self._blocks_after_full_pass()
        self.full_passes += 1
        logger.info(
            "acp collector: memory blocks grew from %d to %d; a full pass (%.0f ms) left %d",
            before,
            blocks,
            1000 * (time.monotonic() - started),
            self._allowance,
        )

    @staticmethod
    def _blocks_after_full_pass() -> int:
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        return sys.getallocatedblocks()


def keep_freezing_survivors(interval: float) -> None:
    """Run a `SurvivorFreezer` round every `interval` seconds on a thread of its own, in this process and in any
    child it forks (a server that imports the application before forking its workers)."""
    _start_freezer(interval)
    os.register_at_fork(after_in_child=lambda: _start_freezer(interval))


def _start_freezer(interval: float) -> None:
    freezer = SurvivorFreezer()

    def rounds() -> None:
        while True:
            time.sleep(interval)
            try:
                freezer.run_round()
            except Exception:  # a finalizer's or a callback's error: the next round runs anyway
                logger.exception("acp collector: a round failed")

    threading.Thread(target=rounds, name="acp-collector", daemon=True).start()


def tune_garbage_collector() -> None:
    """Keep the cyclic garbage collector's full passes rare and short in a process holding thousands of waiters.

    Every waiting long-poll keeps its objects alive (≈ 50 KB each), and the objects of each request in flight are
    promoted to the oldest generation whenever a young collection meets them, so with CPython's defaults a full
    collection ran every ~12 s and, with 5,000 waiters, stopped the process for 1.2 s (bench/run.py idle-polls).
    Freezing what the import made (Django, the URL conf, the models) takes it out of every pass. The young
    generation is collected every 10,000 allocations instead of 700, which promotes far fewer short-lived request
    objects, and not less often: a young pass walks all it holds, and at 50,000 those passes held a worker with
    10,000 machine channels for tens of milliseconds each (a command's create→event p99 173 ms there, 62 ms at
    10,000; bench/channel.py). The oldest generation waits for 100 middle passes instead of 20, so full passes
    stay as rare as they were at 50,000 (with 5,000 long-polls held, 20 made the prepares' p99 twice as long).
    Then the `SurvivorFreezer`'s rounds keep what lives on out of every pass (the module's docstring).
    """
    gc.freeze()
    gc.set_threshold(10_000, 20, 100)
    if settings.ACP_GC_FREEZE_INTERVAL > 0:
        keep_freezing_survivors(settings.ACP_GC_FREEZE_INTERVAL)
