"""The machine-channel load generator: raw asyncio streams, one SSE connection per simulated daemon.

Run by bench/channel.py as a child: reads a JSON spec on stdin, prints one JSON result line on stdout.
Kinds:
  hold      open one `GET /api/v1/machines/{id}/stream` per machine (paced over `ramp_s`), read and discard;
            on a storm request (a JSON file: window, seed) close and reopen each one at a random moment of the
            window; until the stop file appears or the deadline
  commands  a few "real" daemons hold channels; per session a driver creates control commands (user token) and
            times the arrival of the `event: command` with that id on its machine's channel, which acks it
  polls     closed loop of `GET /api/v1/machines/{id}/launches?wait=0`, cycling through the machines' tokens
  one_at_a_time
            each machine's channel opened (until `: connected`) and closed, one after the other; each machine's
            `launches?wait=0` on a connection of its own; each one's `launches?wait=1` answered at its deadline: in
            alternating blocks, the worker's CPU per connect, per poll's take-in and per whole long-poll, by thread
A connection is loadgen's RawStream (a raw socket, not an httpx client): 10,000 of them must be cheap to hold.
Every loop is bounded in count and time; only loopback URLs are accepted.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import thread_cpu_seconds  # noqa: E402
from loadgen import (  # noqa: E402
    RawStream,
    Recorder,
    StreamRefused,
    check_loopback,
    client_for,
    closed_loop,
    create_command,
    send_get,
    timed,
)

CONNECTED = b": connected"


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def open_channel(base_url: str, path: str, token: str, timeout: float):
    """Open a machine's channel and wait for its `: connected`: the stream and the rest of its body's chunks."""
    stream = await asyncio.wait_for(RawStream.open(base_url, path, token), timeout)
    chunks = stream.chunks().__aiter__()
    seen = b""
    try:
        deadline = time.perf_counter() + timeout
        while CONNECTED not in seen:
            seen += await asyncio.wait_for(chunks.__anext__(), max(0.01, deadline - time.perf_counter()))
    except BaseException:
        stream.close()
        raise
    return stream, chunks


def _sample(state: dict, text: str) -> None:
    if len(state["error_samples"]) < 10:
        state["error_samples"].append(text[:300])


# --- hold: the idle daemons, and their reconnect storm ---------------------------------------------------------------


async def hold(spec: dict) -> dict:
    """The N idle daemons. Orders (JSON in `order_file`, each with a new "id") change what they do:
    "storm" closes every channel at a random moment of `window_s` and reopens it at once; "close" closes them all
    and keeps them closed; "open" reopens them, each at a random moment of `ramp_s`."""
    machines = spec["machines"]  # [stream path, device token]
    stop_file, status_file = Path(spec["stop_file"]), Path(spec["status_file"])
    order_file = Path(spec["order_file"])
    deadline = time.monotonic() + spec["max_seconds"]
    timeout = spec.get("connect_timeout", 60.0)  # a daemon waits this long for `: connected`
    state = {
        "connected": 0,  # channels up now
        "connects": 0,  # `: connected` received, in all
        "connect_errors": 0,
        "refused": {},  # status → count
        "paced": 0,  # 503 + Retry-After (the server pacing connects): not an error, the daemon comes back later
        "dropped": 0,  # ended by the server without being asked
        "replaced": 0,
        "storm_reconnects": 0,
        "storm_errors": 0,
        "storm_back_s": None,  # the last storm: seconds from its start until every channel was up again
        "storm_not_back": 0,  # the last storm: channels not up again when its drain ended
        "error_samples": [],
    }
    connect_ms: dict[str, list[float]] = {"ramp": [], "storm": []}
    channels: list[RawStream | None] = [None] * len(machines)
    asked: list[bool] = [False] * len(machines)  # closed by us (a storm, or a close order), not dropped
    storm = {"phase": "ramp"}
    stopping = asyncio.Event()
    held = asyncio.Event()  # cleared by a close order: the daemons stay away until an open order
    held.set()
    reopen = {"ramp_s": 0.0}

    async def connect(index: int):
        path, token = machines[index]
        for attempt in range(20):
            if stopping.is_set():
                return None
            t0 = time.perf_counter()
            try:
                channel = await open_channel(spec["base_url"], path, token, timeout)
            except StreamRefused as exc:
                status = f"status {str(exc).split(':', 1)[0]}"
                state["refused"][status] = state["refused"].get(status, 0) + 1
                if status == "status 503" and exc.retry_after is not None:
                    # Paced admission: come back when told, as the reference daemon does (plus up to a quarter).
                    state["paced"] += 1
                    await asyncio.sleep(exc.retry_after * random.uniform(1.0, 1.25))
                    continue
                state["connect_errors"] += 1
                _sample(state, f"{storm['phase']}: {exc}")
            except (OSError, TimeoutError, StopAsyncIteration, asyncio.IncompleteReadError, ValueError) as exc:
                state["connect_errors"] += 1
                _sample(state, f"{storm['phase']}: {exc!r}")
            else:
                connect_ms.setdefault(storm["phase"], []).append((time.perf_counter() - t0) * 1000)
                state["connects"] += 1
                state["connected"] += 1
                return channel
            # A daemon's backoff: exponential, jittered, at most 30 s.
            await asyncio.sleep(min(30.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0))
        return None

    async def daemon(index: int):
        await asyncio.sleep(spec["ramp_s"] * index / len(machines))
        for _ in range(1000):
            opened = await connect(index)
            if opened is None:
                return
            channel, chunks = opened
            channels[index] = channel
            try:
                async for piece in chunks:
                    if b"event: replaced" in piece:
                        state["replaced"] += 1
            except (OSError, asyncio.IncompleteReadError, ValueError):
                pass
            finally:
                state["connected"] -= 1
                channels[index] = None
                channel.close()
            if stopping.is_set():
                return
            if asked[index]:
                asked[index] = False
                if not held.is_set():  # closed on order: back at a random moment of the open order's ramp
                    await held.wait()
                    await asyncio.sleep(random.uniform(0, reopen["ramp_s"]))
                else:
                    state["storm_reconnects"] += 1
            else:
                state["dropped"] += 1
                await asyncio.sleep(random.uniform(0.5, 1.5))

    def ask_reconnect(index: int) -> None:
        channel = channels[index]
        if channel is not None:
            asked[index] = True
            channel.close()  # the read sees the end; the daemon reopens at once

    async def run_storm(order: dict):
        storm["phase"] = "storm"
        errors_before = state["connect_errors"]
        rng = random.Random(order.get("seed", 1))
        loop = asyncio.get_running_loop()
        now = loop.time()
        for index in range(len(machines)):
            loop.call_at(now + rng.uniform(0, order["window_s"]), ask_reconnect, index)
        await asyncio.sleep(order["window_s"])
        # Wait (bounded) until every channel asked to reconnect is up again.
        drain_until = loop.time() + order.get("drain_s", 60.0)
        while loop.time() < drain_until:
            if not any(asked) and state["connected"] == len(machines):
                state["storm_back_s"] = round(loop.time() - now, 1)
                break
            await asyncio.sleep(0.1)
        else:
            state["storm_back_s"] = None
        not_back = max(len(machines) - state["connected"], sum(asked))
        state["storm_not_back"] = 0 if state["storm_back_s"] is not None else not_back
        state["storm_errors"] += state["connect_errors"] - errors_before
        storm["phase"] = "idle"
        storm["done"] = order.get("id")

    def close_all() -> None:
        held.clear()
        for index in range(len(machines)):
            ask_reconnect(index)

    def open_all(order: dict) -> None:
        reopen["ramp_s"] = order["ramp_s"]
        held.set()

    async def watch():
        orders_seen = set()
        while time.monotonic() < deadline and not stop_file.exists():
            try:
                order = json.loads(order_file.read_text()) if order_file.exists() else None
            except ValueError:  # being written
                order = None
            if order and order["id"] not in orders_seen and storm["phase"] != "storm":
                orders_seen.add(order["id"])
                if order["kind"] == "storm":
                    asyncio.create_task(run_storm(order))
                elif order["kind"] == "close":
                    close_all()
                elif order["kind"] == "open":
                    open_all(order)
            status = {**state, "storm_done": storm.get("done"), "order": order and order["id"], "t": time.time()}
            status_file.write_text(json.dumps(status))
            await asyncio.sleep(0.5)
        stopping.set()
        held.set()

    tasks = [asyncio.create_task(daemon(i)) for i in range(len(machines))]
    await watch()
    for channel in channels:
        if channel is not None:
            channel.close()
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=30)
    return {
        **state,
        "connect_ms": {phase: [round(x, 2) for x in values] for phase, values in connect_ms.items()},
        "cpu_s": round(time.process_time(), 2),
    }


# --- commands: create → the daemon's channel receives it ------------------------------------------------------------


async def commands(spec: dict) -> dict:
    start = time.perf_counter()
    t_start = start + spec["warmup"]
    t_end = t_start + spec["duration"]
    recorder = Recorder(t_start, t_end)
    received: dict[str, asyncio.Future] = {}
    from_answer_ms: list[float] = []  # create's answer → the event
    from_send_ms: list[float] = []  # create sent → the event
    create_ms: list[float] = []
    wrong_channel = 0
    gap = spec.get("gap_s", [0.2, 0.4])
    loop = asyncio.get_running_loop()

    def future_for(command_id: str) -> asyncio.Future:
        if command_id not in received:
            received[command_id] = loop.create_future()
        return received[command_id]

    async def daemon(daemon_client, machine: dict, stop: asyncio.Event, up: asyncio.Event):
        nonlocal wrong_channel
        own_sessions = {s for _, s in machine["sessions"]}
        for _ in range(100):
            if stop.is_set():
                return
            try:
                channel, _ = await open_channel(spec["base_url"], machine["path"], machine["token"], 60)
                up.set()
                async for event_id, data in channel.messages():  # a new reader of the body, after `: connected`
                    if not event_id.startswith("command:"):
                        continue
                    t_recv = time.perf_counter()
                    command = json.loads(data)
                    if command["sessionId"] not in own_sessions:
                        wrong_channel += 1
                    future = future_for(command["id"])
                    if not future.done():
                        future.set_result(t_recv)
                    base = f"/v1/threads/{command['threadId']}/local-sessions/{command['sessionId']}/control"
                    await timed(
                        recorder,
                        lambda base=base, command=command: daemon_client.post(
                            f"{base}/{command['id']}/ack", json={"status": "acknowledged"}
                        ),
                        {200},
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - counted; the daemon reconnects
                recorder.record(time.perf_counter(), time.perf_counter(), "channel", False, repr(exc))
                await asyncio.sleep(0.5)
            else:
                if not stop.is_set():
                    recorder.record(time.perf_counter(), time.perf_counter(), "channel ended", False, machine["path"])

    async def driver(user_client, thread_id: str, session_id: str, stop: asyncio.Event):
        base = f"/v1/threads/{thread_id}/local-sessions/{session_id}/control"
        for _ in range(spec["max_rounds"]):
            await asyncio.sleep(random.uniform(*gap))
            if time.perf_counter() >= t_end:
                return
            t0, t1, command_id = await create_command(recorder, user_client, base)
            if command_id is None:
                continue
            try:
                t_recv = await asyncio.wait_for(future_for(command_id), timeout=30)
            except TimeoutError:
                recorder.record(t0, time.perf_counter(), "never delivered", False, command_id)
                continue
            finally:
                received.pop(command_id, None)
            if recorder.in_window(t1):
                create_ms.append((t1 - t0) * 1000)
                from_answer_ms.append((t_recv - t1) * 1000)
                from_send_ms.append((t_recv - t0) * 1000)

    machines = spec["machines"]  # {path, token, sessions: [[thread, session]…]}
    stop = asyncio.Event()
    cpu0 = None
    async with client_for(spec, 2 * len(machines) + 4) as user_client:
        daemon_clients = [client_for(spec, 4, m["token"]) for m in machines]
        ups = [asyncio.Event() for _ in machines]
        daemons = [
            asyncio.create_task(daemon(c, m, stop, up)) for c, m, up in zip(daemon_clients, machines, ups, strict=True)
        ]
        # The channels are up before the first create (bounded: a create before it is delivered on connect).
        await asyncio.wait([asyncio.create_task(up.wait()) for up in ups], timeout=spec["warmup"] + 60)
        cpu0 = time.process_time()
        drivers = [driver(user_client, t, s, stop) for m in machines for t, s in m["sessions"]]
        await asyncio.gather(*drivers)
        stop.set()
        for task in daemons:
            task.cancel()
        await asyncio.gather(*daemons, return_exceptions=True)
        for client in daemon_clients:
            await client.aclose()
    return {
        "from_answer_ms": [round(x, 3) for x in from_answer_ms],
        "from_send_ms": [round(x, 3) for x in from_send_ms],
        "create_ms": [round(x, 3) for x in create_ms],
        "wrong_channel": wrong_channel,
        "statuses": recorder.statuses,
        "errors": recorder.errors,
        "error_samples": recorder.error_samples,
        "generator_cpu_s": round(time.process_time() - cpu0, 2),
    }


# --- polls: the long-poll's take-in, for comparison ------------------------------------------------------------------


def poll_steps(spec: dict):
    polls = spec["polls"]  # [launches path, device token]

    def make_step(index: int, recorder: Recorder):
        async def step(k: int):
            path, token = polls[(index + k * spec["clients"]) % len(polls)]
            await timed(
                recorder,
                lambda: spec["_clients"][index].get(
                    path, params={"wait": 0}, headers={"Authorization": f"Bearer {token}"}
                ),
                {200},
            )

        return step

    return make_step


# --- one at a time: what a connect and a poll cost the worker, with nothing else going on ----------------------------


async def poll_on_its_own_connection(base_url: str, path: str, token: str, wait: float = 0) -> int:
    """`GET path?wait=…` on a new connection (as a channel connect takes one), read to its end: the status."""
    reader, writer = await send_get(base_url, f"{path}?wait={wait:g}", token, "Connection: close")
    try:
        answer = await reader.read()  # the server closes the connection after its answer
    finally:
        writer.close()
    return int(answer.split(maxsplit=2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


async def connect_and_close(base_url: str, path: str, token: str) -> int:
    stream, _ = await open_channel(base_url, path, token, 10.0)
    stream.close()
    return 200


async def _status(action, base_url: str, path: str, token: str) -> int:
    try:
        return await action(base_url, path, token)
    except (TimeoutError, OSError, StreamRefused, ValueError):
        return 0


async def _one_after_the_other(action, base_url: str, machines: list) -> list[int]:
    return [await _status(action, base_url, path, token) for path, token in machines]


async def _staggered(action, base_url: str, machines: list, gap: float) -> list[int]:
    """One started every `gap` s: each is taken in and answered on its own while their waits overlap."""
    started = []
    for path, token in machines:
        started.append(asyncio.ensure_future(_status(action, base_url, path, token)))
        await asyncio.sleep(gap)
    return list(await asyncio.gather(*started))


async def one_at_a_time(spec: dict) -> dict:
    """Each action in turn, none overlapping, after `warm` of each unmeasured: a channel's connect (+ close), a
    poll's take-in alone (`wait=0`), and a whole long-poll as an idle daemon makes it (`wait=long_poll_wait`,
    answered at its deadline: the take-in, subscribing, the checks, the answer), the long-polls started one every
    `long_poll_gap_s` so that their waits overlap but their work does not. The three alternate in `blocks` blocks,
    so that a machine whose speed moves during the run moves them all. The worker's CPU by thread around each
    block, read once the worker is idle again (`settle_s` after the block's last answer)."""
    long_poll = functools.partial(poll_on_its_own_connection, wait=spec["long_poll_wait"])
    actions = {
        "connect": (functools.partial(_one_after_the_other, connect_and_close), spec["channels"]),
        "poll": (functools.partial(_one_after_the_other, poll_on_its_own_connection), spec["polls"]),
        "long poll": (functools.partial(_staggered, long_poll, gap=spec["long_poll_gap_s"]), spec["polls"]),
    }
    for run, machines in actions.values():
        await run(spec["base_url"], machines[: spec["warm"]])
    result = {name: {"count": 0, "elapsed_s": 0.0, "statuses": {}, "cpu_s": {}} for name in actions}
    await asyncio.sleep(spec["settle_s"])
    before = thread_cpu_seconds(spec["worker_pid"])
    for block in range(spec["blocks"]):
        for name, (run, machines) in actions.items():
            totals, t0 = result[name], time.perf_counter()
            part = machines[block :: spec["blocks"]]
            for status in await run(spec["base_url"], part):
                totals["statuses"][status] = totals["statuses"].get(status, 0) + 1
            totals["elapsed_s"] += time.perf_counter() - t0
            totals["count"] += len(part)
            await asyncio.sleep(spec["settle_s"])
            after = thread_cpu_seconds(spec["worker_pid"])
            for thread in after:
                totals["cpu_s"][thread] = totals["cpu_s"].get(thread, 0.0) + after[thread] - before[thread]
            before = after
    for totals in result.values():
        count, cpu = totals["count"], totals.pop("cpu_s")
        totals["elapsed_s"] = round(totals["elapsed_s"], 2)
        totals["errors"] = count - totals["statuses"].get(200, 0)
        totals["worker_cpu_ms"] = {thread: round(1000 * seconds / count, 3) for thread, seconds in cpu.items()}
    return result


def main() -> None:
    spec = json.loads(sys.stdin.read())
    check_loopback(spec["base_url"])
    nofile = raise_nofile()
    kind = spec["kind"]
    if kind == "hold":
        result = asyncio.run(hold(spec))
    elif kind == "commands":
        result = asyncio.run(commands(spec))
    elif kind == "polls":
        result = asyncio.run(closed_loop(spec, poll_steps(spec)))
    elif kind == "one_at_a_time":
        result = asyncio.run(one_at_a_time(spec))
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    result.update(pid=os.getpid(), nofile=nofile)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
