"""The pool that lends requests their thread under ASGI (acp/serving/request_threads.py), and the asgiref internals
it relies on."""

import asyncio
import contextlib
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import SyncToAsync, ThreadSensitiveContext, sync_to_async

from acp.serving import request_threads
from acp.serving.request_threads import RequestThreadPool, released_request_thread


def run(coroutine):
    return asyncio.run(coroutine)


def test_the_asgiref_internals_the_pool_relies_on_are_there():
    """A thread-sensitive call runs on the executor mapped to its request's context: the pool's one hook.

    If an asgiref upgrade changes this, the pool would silently stop being used (or break requests): this fails
    instead. Then pin asgiref back (pyproject.toml) or serve with ACP_SERVING=stock until the pool is adapted.
    """
    assert isinstance(SyncToAsync.thread_sensitive_context, contextvars.ContextVar)
    assert hasattr(SyncToAsync.context_to_thread_executor, "pop")

    async def scenario():
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mapped-by-hand")
        try:
            async with ThreadSensitiveContext() as context:
                assert SyncToAsync.thread_sensitive_context.get(None) is context
                SyncToAsync.context_to_thread_executor[context] = executor
                name = await sync_to_async(lambda: threading.current_thread().name)()
                assert SyncToAsync.context_to_thread_executor.pop(context, None) is executor
            return name
        finally:
            executor.shutdown()

    assert run(scenario()).startswith("mapped-by-hand")


def test_lends_each_executor_to_one_request_at_a_time_and_queues_the_rest_in_order():
    async def scenario():
        pool = RequestThreadPool(2)
        first, second = await pool.lend(), await pool.lend()
        assert first is not second
        third = asyncio.create_task(pool.lend())
        fourth = asyncio.create_task(pool.lend())
        await asyncio.sleep(0)
        assert not third.done() and not fourth.done()
        pool.give_back(second)
        assert await third is second
        assert not fourth.done()
        pool.give_back(first)
        assert await fourth is first

    run(scenario())


@pytest.mark.parametrize(
    "give_back_before_the_cancel_lands",
    [False, True],
    ids=["cancel-then-give-back", "give-back-before-the-cancelled-request-runs"],
)
def test_a_request_cancelled_while_queued_leaves_the_queue_and_loses_nothing(give_back_before_the_cancel_lands):
    """Task.cancel() cancels the awaited future at once, so a give_back may pass over it before the request runs."""

    async def scenario():
        pool = RequestThreadPool(1)
        only = await pool.lend()
        cancelled = asyncio.create_task(pool.lend())
        waiting = asyncio.create_task(pool.lend())
        await asyncio.sleep(0)
        cancelled.cancel()
        if give_back_before_the_cancel_lands:
            pool.give_back(only)
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        if not give_back_before_the_cancel_lands:
            pool.give_back(only)
        assert await waiting is only

    run(scenario())


def test_an_executor_not_of_the_pool_is_shut_down_not_kept():
    async def scenario():
        pool = RequestThreadPool(1)
        stranger = ThreadPoolExecutor(max_workers=1)
        pool.give_back(stranger)
        with pytest.raises(RuntimeError):
            stranger.submit(print)
        assert await pool.lend() is not stranger

    run(scenario())


def test_a_waiting_request_lends_its_thread_to_another_and_gets_one_back(settings):
    """With a single thread: while the first request waits, a second one runs to its end on that thread."""
    settings.ACP_REQUEST_THREADS = 1
    settings.ACP_SERVING = "optimised"  # in stock serving there is no pool to give the thread back to

    def thread_name():
        return threading.current_thread().name

    async def first_request(pool, waiting: asyncio.Event, resume: asyncio.Event) -> list[str]:
        async with ThreadSensitiveContext() as context:
            SyncToAsync.context_to_thread_executor[context] = await pool.lend()
            names = [await sync_to_async(thread_name)()]
            async with released_request_thread():
                waiting.set()
                await resume.wait()
            names.append(await sync_to_async(thread_name)())  # on a thread borrowed again
            pool.give_back(SyncToAsync.context_to_thread_executor.pop(context))
            return names

    async def second_request(pool) -> str:
        async with ThreadSensitiveContext() as context:
            SyncToAsync.context_to_thread_executor[context] = await pool.lend()
            name = await sync_to_async(thread_name)()
            pool.give_back(SyncToAsync.context_to_thread_executor.pop(context))
            return name

    async def scenario():
        pool = request_threads.request_thread_pool()
        waiting, resume = asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(first_request(pool, waiting, resume))
        await asyncio.wait_for(waiting.wait(), 5)
        second_thread = await asyncio.wait_for(second_request(pool), 5)  # not starved by the waiting one
        resume.set()
        return await asyncio.wait_for(first, 5), second_thread

    request_threads._pool = None
    try:
        first_threads, second_thread = run(scenario())
    finally:
        request_threads._pool = None
    assert first_threads == [second_thread, second_thread]
    assert second_thread.startswith("acp-request")


def test_background_work_holds_at_most_half_the_threads_and_requests_pass_its_queue():
    async def scenario():
        pool = RequestThreadPool(4)
        background = [await pool.lend(background=True) for _ in range(2)]  # its share, half of 4
        queued = [asyncio.create_task(pool.lend(background=True)) for _ in range(3)]
        await asyncio.sleep(0)
        assert not any(task.done() for task in queued)  # two threads idle, but not for background work
        request = await asyncio.wait_for(pool.lend(), 1)  # a later request is served at once
        pool.give_back(background[0], background=True)
        assert await asyncio.wait_for(queued[0], 1) is not request  # within the share again, in order
        assert not queued[1].done()
        pool.give_back(request)
        await asyncio.sleep(0)
        assert not queued[1].done()  # a thread is idle, the share is taken: it waits for background work to end
        pool.give_back(background[1], background=True)
        assert await asyncio.wait_for(queued[1], 1) is not None
        assert not queued[2].done()

    run(scenario())


def test_background_work_within_its_share_goes_before_queued_requests():
    async def scenario():
        pool = RequestThreadPool(2)
        first, second = await pool.lend(), await pool.lend()
        request = asyncio.create_task(pool.lend())
        await asyncio.sleep(0)
        background = asyncio.create_task(pool.lend(background=True))
        await asyncio.sleep(0)
        pool.give_back(first)
        assert await asyncio.wait_for(background, 1) is first  # a channel's connect does not wait for every request
        assert not request.done()
        pool.give_back(second)
        assert await asyncio.wait_for(request, 1) is second

    run(scenario())


def test_run_in_background_gives_the_thread_back_when_the_function_ends_not_when_cancelled(settings):
    settings.ACP_REQUEST_THREADS = 2  # a background share of one thread
    settings.ACP_SERVING = "optimised"
    release = threading.Event()

    async def scenario():
        slow = asyncio.create_task(request_threads.run_in_background(lambda: release.wait(5)))
        await asyncio.sleep(0.05)
        slow.cancel()
        quick = asyncio.create_task(request_threads.run_in_background(threading.current_thread))
        await asyncio.sleep(0.05)
        assert not quick.done()  # the one background thread still runs the cancelled call
        release.set()
        thread = await asyncio.wait_for(quick, 5)
        assert thread.name.startswith("acp-request") and thread is not threading.current_thread()
        with pytest.raises(asyncio.CancelledError):
            await slow

    request_threads._pool = None
    try:
        run(scenario())
    finally:
        request_threads._pool = None


class LoopInAThread:
    """An event loop running in a thread of its own, as a test client's or a fake daemon's is beside the test's."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def start(self, coroutine) -> "asyncio.Future":
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def call(self, function):
        """Run `function` on the loop's thread, and wait for it."""
        return self.start(_call(function)).result(5)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


async def _call(function):
    return function()


@pytest.fixture
def two_loops():
    loops = LoopInAThread(), LoopInAThread()
    yield loops
    for each in loops:
        each.close()


def test_an_executor_given_back_on_one_loop_wakes_a_request_waiting_on_another(two_loops):
    """The waiting loop has nothing else to do: its future resolved from the other loop's thread would never be run
    (a test client's request hung there until CI's time ran out)."""
    first, second = two_loops
    pool = RequestThreadPool(1)
    only = first.start(pool.lend()).result(5)
    waiting = second.start(pool.lend())
    second.call(lambda: None)  # its lend() has queued
    assert not waiting.done()
    first.start(_call(lambda: pool.give_back(only))).result(5)
    assert waiting.result(5) is only


def test_a_request_cancelled_while_its_executor_crosses_loops_gives_it_back(two_loops):
    first, second = two_loops
    pool = RequestThreadPool(1)
    only = first.start(pool.lend()).result(5)
    request = second.call(lambda: second.loop.create_task(pool.lend()))
    second.call(lambda: None)  # its lend() has queued
    holding, let_go = threading.Event(), threading.Event()

    def hold_the_loop_then_cancel():  # the executor is handed over while this loop cannot take it yet
        holding.set()
        let_go.wait(5)
        request.cancel()  # cancels the future it awaits at once, before the hand-over runs

    second.loop.call_soon_threadsafe(hold_the_loop_then_cancel)
    assert holding.wait(5)
    first.start(_call(lambda: pool.give_back(only))).result(5)
    let_go.set()
    assert second.start(_cancelled(request)).result(5)
    assert first.start(pool.lend()).result(5) is only  # given back, not lost with the cancelled request


async def _cancelled(task: asyncio.Task) -> bool:
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return task.cancelled()
