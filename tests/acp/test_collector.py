"""The collector's rounds in a server process (acp/serving/collector.py): the young collected, the survivors frozen,
and a full pass once the frozen have grown."""

import gc
import os
import subprocess
import sys
import textwrap
import weakref

import pytest

from acp.serving.collector import SurvivorFreezer


class Node:
    def __init__(self):
        self.other = None


def cycle() -> weakref.ref:
    """Two objects referring to each other, held by nothing else: only the cyclic collector frees them."""
    first, second = Node(), Node()
    first.other, second.other = second, first
    return weakref.ref(first)


def is_frozen(thing) -> bool:
    return not any(thing is each for generation in range(3) for each in gc.get_objects(generation=generation))


@pytest.fixture(autouse=True)
def unfrozen_after():
    """The rounds freeze everything this process holds: given back to the generations after each test."""
    yield
    gc.unfreeze()


def test_a_round_frees_a_young_cycle_and_freezes_what_survived():
    freezer = SurvivorFreezer()
    garbage = cycle()
    kept = Node()
    freezer.run_round()
    assert garbage() is None
    assert is_frozen(kept)


def test_a_frozen_object_is_still_freed_when_its_last_reference_goes():
    freezer = SurvivorFreezer()
    kept = Node()
    freezer.run_round()
    assert is_frozen(kept)
    gone = weakref.ref(kept)
    del kept
    assert gone() is None  # by reference counting, without a pass


def test_a_cycle_made_garbage_once_frozen_is_freed_by_the_full_pass_the_growth_brings():
    freezer = SurvivorFreezer(growth=0.05)
    first, second = Node(), Node()
    first.other, second.other = second, first
    freezer.run_round()  # frozen while still held
    garbage = weakref.ref(first)
    del first, second
    gc.collect()
    assert garbage() is not None  # the price: no pass walks the frozen
    assert freezer.full_passes == 0
    growth = [Node() for _ in range(int(0.06 * sys.getallocatedblocks()))]
    freezer.run_round()
    assert freezer.full_passes == 1
    assert garbage() is None
    assert is_frozen(growth[0])


def test_frozen_objects_that_come_and_go_bring_no_full_pass():
    """A channel's objects, made as another's are freed (a reconnect storm): the memory they hold does not grow, so
    no full pass, though what the rounds froze adds up to more than the growth allowed."""
    freezer = SurvivorFreezer(growth=0.05)
    batch = max(1, int(0.02 * sys.getallocatedblocks()))
    held = []
    for _ in range(10):
        held = [Node() for _ in range(batch)]  # the last batch's are freed as this one is held
        freezer.run_round()
    assert freezer.full_passes == 0
    assert is_frozen(held[0])


def run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "acp.settings", "ACP_GC_FREEZE_INTERVAL": "0.01"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_server_process_and_its_forked_workers_run_the_rounds():
    """As gunicorn runs them: the application built (tune_garbage_collector), then, with --preload, workers forked."""
    output = run_python(
        """
        import gc, os, threading, time
        import django
        django.setup()
        from acp.serving.collector import tune_garbage_collector

        def frozen_soon(thing):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if not any(thing is each for each in gc.get_objects()):
                    return True
                time.sleep(0.01)
            return False

        class Kept:
            pass

        tune_garbage_collector()
        print("parent", frozen_soon(Kept()))
        child = os.fork()
        if child == 0:
            names = [thread.name for thread in threading.enumerate()]
            os._exit(0 if names.count("acp-collector") == 1 and frozen_soon(Kept()) else 1)
        _, status = os.waitpid(child, 0)
        print("child", os.waitstatus_to_exitcode(status) == 0)
        """
    )
    assert output.split() == ["parent", "True", "child", "True"]


def test_the_rounds_are_off_with_an_interval_of_zero():
    output = run_python(
        """
        import os, threading
        os.environ["ACP_GC_FREEZE_INTERVAL"] = "0"
        import django
        django.setup()
        from acp.serving.collector import tune_garbage_collector

        tune_garbage_collector()
        print([thread.name for thread in threading.enumerate()])
        """
    )
    assert "acp-collector" not in output
