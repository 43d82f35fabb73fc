"""The load generator: one process, asyncio + httpx, N concurrent client coroutines (closed loop).

Run by bench/run.py as a child: reads a JSON spec on stdin, prints one JSON result line on stdout.
Kinds:
  prepare  POST …/push-sessions; every `reuse_every`-th request of a client repeats its previous body
  get      GET of one object
  control  create a control command → the daemon's long-poll wakes → ack (wake-up latency and round trip)
  hold     keep `len(polls)` idle long-polls open, re-issued when they return, until told to stop
Every loop is bounded in count and time; only loopback URLs are accepted.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx

PLAN = {
    "baseSnapshotId": "snap-0001",
    "files": [
        {"path": f"src/module_{i}.py", "op": "upload", "size": 1000 + 37 * i, "sha256": f"{i:064x}"} for i in range(8)
    ],
}
PLAN_JSON = json.dumps(PLAN, separators=(",", ":"))
METADATA_JSON = json.dumps({"client": "bench", "daemonVersion": "1.0.0"}, separators=(",", ":"))


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if not (host == "localhost" or host.startswith("127.") or host == "::1"):
        raise SystemExit(f"refusing to send load to {host!r}: loopback only")


def prepare_body(signature: str) -> bytes:
    return f'{{"planSignature":"{signature}","plan":{PLAN_JSON},"metadata":{METADATA_JSON}}}'.encode()


class Recorder:
    """Latencies of requests completed inside the measuring window [t_start, t_end]."""

    def __init__(self, t_start: float, t_end: float):
        self.t_start, self.t_end = t_start, t_end
        self.latencies_ms: list[float] = []
        self.statuses: dict[str, int] = {}
        self.errors = 0
        self.error_samples: list[str] = []
        self.notes: dict[str, int] = {}

    def in_window(self, t: float) -> bool:
        return self.t_start <= t <= self.t_end

    def record(self, t0: float, t1: float, status: str, ok: bool, detail: str = "") -> None:
        if not self.in_window(t1):
            return
        self.latencies_ms.append((t1 - t0) * 1000)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if not ok:
            self.errors += 1
            if len(self.error_samples) < 10:
                self.error_samples.append(f"{status}: {detail[:300]}")

    def note(self, name: str, t: float) -> None:
        if self.in_window(t):
            self.notes[name] = self.notes.get(name, 0) + 1


def client_for(spec: dict, connections: int, token: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=spec["base_url"],
        headers={"Authorization": f"Bearer {token or spec['token']}"},
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=httpx.Timeout(spec.get("request_timeout", 60.0)),
    )


async def cpu_window(t_start: float, t_end: float, out: dict) -> None:
    """This process's CPU seconds over the window (to tell whether the generator itself saturates a core)."""
    await asyncio.sleep(max(0.0, t_start - time.perf_counter()))
    cpu0 = time.process_time()
    await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
    out["cpu_s"] = time.process_time() - cpu0


async def closed_loop(spec: dict, make_step) -> dict:
    """`spec['clients']` coroutines, each calling its step until the window ends or `max_per_client` calls."""
    start = time.perf_counter()
    t_start = start + spec["warmup"]
    t_end = t_start + spec["duration"]
    recorder = Recorder(t_start, t_end)
    cpu: dict = {}

    async def worker(index: int):
        step = make_step(index, recorder)
        # Connect one client at a time: a burst of connects is accepted whole by the first worker to wake up
        # (asyncio accepts up to the backlog per wake-up), and keep-alive would pin the whole load on it.
        await asyncio.sleep(index * spec.get("stagger_s", 0.03))
        for k in range(spec["max_per_client"]):
            if time.perf_counter() >= t_end:
                return
            await step(k)

    async with client_for(spec, spec["clients"]) as client:
        spec["_client"] = client
        await asyncio.gather(cpu_window(t_start, t_end, cpu), *(worker(i) for i in range(spec["clients"])))
    return {
        "latencies_ms": [round(x, 3) for x in recorder.latencies_ms],
        "completed": len(recorder.latencies_ms),
        "window_s": spec["duration"],
        "statuses": recorder.statuses,
        "errors": recorder.errors,
        "error_samples": recorder.error_samples,
        "notes": recorder.notes,
        "generator_cpu_s": round(cpu.get("cpu_s", 0.0), 2),
    }


async def timed(recorder: Recorder, request, expected: set[int], on_response=None):
    t0 = time.perf_counter()
    try:
        response = await request()
    except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the run
        recorder.record(t0, time.perf_counter(), "exception", False, repr(exc))
        return None
    t1 = time.perf_counter()
    ok = response.status_code in expected
    recorder.record(t0, t1, str(response.status_code), ok, "" if ok else response.text)
    if on_response is not None:
        on_response(response, t1)
    return response


# --- prepare -------------------------------------------------------------------------------------------------------


def prepare_steps(spec: dict):
    reuse_every = spec.get("reuse_every", 4)
    hot = spec.get("hot", False)

    def make_step(index: int, recorder: Recorder):
        bindings = spec["client_bindings"][index]
        last: dict = {}

        async def step(k: int):
            client = spec["_client"]
            reuse = bool(last) and (k % reuse_every == reuse_every - 1)
            if reuse:
                binding, body = last["binding"], last["body"]
                # A reuse answers 200. On the hot binding another client may have superseded it meanwhile: 201.
                expected = {200, 201} if hot else {200}
            else:
                binding = bindings[k % len(bindings)]
                body = prepare_body(f"sha256:{uuid.uuid4().hex}")
                expected = {201}

            def on_response(response, t1):
                if reuse and response.status_code == 201:
                    recorder.note("reuse_answered_201_superseded_meanwhile", t1)

            await timed(
                recorder,
                lambda: client.post(
                    f"/v1/workspace-bindings/{binding}/push-sessions",
                    content=body,
                    headers={"Content-Type": "application/json"},
                ),
                expected,
                on_response,
            )
            last.update(binding=binding, body=body)

        return step

    return make_step


# --- get -----------------------------------------------------------------------------------------------------------


def get_steps(spec: dict):
    def make_step(index: int, recorder: Recorder):
        async def step(k: int):
            await timed(recorder, lambda: spec["_client"].get(spec["path"]), {200})

        return step

    return make_step


# --- control command round trips -------------------------------------------------------------------------------------


async def control(spec: dict) -> dict:
    """Per session: a daemon coroutine long-polls and acks; a driver creates a command, waits for the ack, pauses."""
    start = time.perf_counter()
    t_start = start + spec["warmup"]
    t_end = t_start + spec["duration"]
    recorder = Recorder(t_start, t_end)
    wake_ms: list[float] = []  # create's response → the poll's response carrying the command
    delivery_ms: list[float] = []  # create sent → the poll's response
    round_trip_ms: list[float] = []  # create sent → the ack's response
    create_ms: list[float] = []
    poll_timeouts = 0
    cpu: dict = {}
    gap = spec.get("gap_s", [0.05, 0.15])
    futures: dict[str, asyncio.Future] = {}

    def future_for(command_id: str) -> asyncio.Future:
        if command_id not in futures:
            futures[command_id] = asyncio.get_running_loop().create_future()
        return futures[command_id]

    async def daemon(daemon_client, base: str, stop: asyncio.Event):
        nonlocal poll_timeouts
        for _ in range(spec["max_rounds"] * 2 + 100):
            if stop.is_set() or time.perf_counter() >= t_end + 5:
                return
            try:
                response = await daemon_client.get(f"{base}/poll", params={"wait": 30})
            except Exception as exc:  # noqa: BLE001
                recorder.record(time.perf_counter(), time.perf_counter(), "poll exception", False, repr(exc))
                await asyncio.sleep(0.2)
                continue
            t_recv = time.perf_counter()
            if response.status_code != 200:
                recorder.record(t_recv, t_recv, f"poll {response.status_code}", False, response.text)
                await asyncio.sleep(0.2)
                continue
            commands = response.json()["data"]
            if not commands:
                poll_timeouts += 1
                continue
            for command in commands:
                ack = await timed(
                    recorder,
                    lambda command=command: daemon_client.post(
                        f"{base}/{command['id']}/ack", json={"status": "acknowledged"}
                    ),
                    {200},
                )
                t_ack = time.perf_counter()
                future = future_for(command["id"])
                if not future.done():
                    future.set_result((t_recv, t_ack, ack is not None and ack.status_code == 200))

    async def driver(user_client, base: str, stop: asyncio.Event):
        try:
            for _ in range(spec["max_rounds"]):
                await asyncio.sleep(random.uniform(*gap))  # let the daemon's poll settle into its wait
                if time.perf_counter() >= t_end:
                    return
                t0 = time.perf_counter()
                response = await timed(
                    recorder,
                    lambda: user_client.post(base, json={"commandType": "message", "payload": {"text": "bench"}}),
                    {201},
                )
                t1 = time.perf_counter()
                if response is None or response.status_code != 201:
                    continue
                command_id = response.json()["command"]["id"]
                try:
                    t_recv, t_ack, acked = await asyncio.wait_for(future_for(command_id), timeout=35)
                except TimeoutError:
                    recorder.record(t0, time.perf_counter(), "never delivered", False, command_id)
                    continue
                finally:
                    futures.pop(command_id, None)
                if recorder.in_window(t1) and acked:
                    create_ms.append((t1 - t0) * 1000)
                    wake_ms.append((t_recv - t1) * 1000)
                    delivery_ms.append((t_recv - t0) * 1000)
                    round_trip_ms.append((t_ack - t0) * 1000)
        finally:
            stop.set()

    sessions = spec["sessions"]
    async with (
        client_for(spec, len(sessions) + 4) as user_client,
        client_for(spec, len(sessions) + 4, spec["device_token"]) as daemon_client,
    ):
        cpu_task = asyncio.create_task(cpu_window(t_start, t_end, cpu))
        drivers, daemons = [], []
        for thread_id, session_id in sessions:
            base = f"/v1/threads/{thread_id}/local-sessions/{session_id}/control"
            stop = asyncio.Event()
            daemons.append(asyncio.create_task(daemon(daemon_client, base, stop)))
            drivers.append(asyncio.create_task(driver(user_client, base, stop)))
        await asyncio.gather(cpu_task, *drivers)
        for task in daemons:
            task.cancel()
        await asyncio.gather(*daemons, return_exceptions=True)
    return {
        "round_trips": len(round_trip_ms),
        "wake_ms": [round(x, 3) for x in wake_ms],
        "delivery_ms": [round(x, 3) for x in delivery_ms],
        "round_trip_ms": [round(x, 3) for x in round_trip_ms],
        "create_ms": [round(x, 3) for x in create_ms],
        "window_s": spec["duration"],
        "statuses": recorder.statuses,
        "errors": recorder.errors,
        "error_samples": recorder.error_samples,
        "poll_timeouts": poll_timeouts,
        "generator_cpu_s": round(cpu.get("cpu_s", 0.0), 2),
    }


# --- idle long-polls -------------------------------------------------------------------------------------------------


async def hold(spec: dict) -> dict:
    """Hold one long-poll per path open, re-issued when it returns, until the stop file appears or the deadline."""
    polls = spec["polls"]  # [path, token] pairs: one daemon each
    per_client = spec.get("connections_per_client", 100)
    stop_file = Path(spec["stop_file"])
    status_file = Path(spec["status_file"])
    deadline = time.monotonic() + spec["max_seconds"]
    ramp = spec["ramp_s"]
    state = {"in_flight": 0, "sent": 0, "returned": 0, "errors": 0, "error_samples": []}
    clients = [client_for(spec, per_client + 1) for _ in range(0, len(polls), per_client)]
    stopping = asyncio.Event()

    async def poller(index: int, path: str, token: str):
        client = clients[index // per_client]
        headers = {"Authorization": f"Bearer {token}"}
        await asyncio.sleep(ramp * index / len(polls))
        for _ in range(10_000):
            if stopping.is_set():
                return
            state["in_flight"] += 1
            state["sent"] += 1
            try:
                response = await client.get(path, params={"wait": spec.get("wait", 30)}, headers=headers)
                ok = response.status_code == 200
                detail = "" if ok else f"{response.status_code}: {response.text[:200]}"
            except Exception as exc:  # noqa: BLE001
                ok, detail = False, repr(exc)
            finally:
                state["in_flight"] -= 1
            state["returned"] += 1
            if not ok:
                state["errors"] += 1
                if len(state["error_samples"]) < 10:
                    state["error_samples"].append(detail)
                await asyncio.sleep(1.0)

    async def watch():
        while time.monotonic() < deadline and not stop_file.exists():
            public = {k: v for k, v in state.items() if k != "error_samples"}
            status_file.write_text(json.dumps({**public, "t": time.time()}))
            await asyncio.sleep(0.5)
        stopping.set()

    tasks = [asyncio.create_task(poller(i, path, token)) for i, (path, token) in enumerate(polls)]
    await watch()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for client in clients:
        await client.aclose()
    return {k: v for k, v in state.items() if k != "in_flight"} | {"cpu_s": round(time.process_time(), 2)}


def main() -> None:
    spec = json.loads(sys.stdin.read())
    check_loopback(spec["base_url"])
    kind = spec["kind"]
    if kind == "prepare":
        result = asyncio.run(closed_loop(spec, prepare_steps(spec)))
    elif kind == "get":
        result = asyncio.run(closed_loop(spec, get_steps(spec)))
    elif kind == "control":
        result = asyncio.run(control(spec))
    elif kind == "hold":
        result = asyncio.run(hold(spec))
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    result["pid"] = os.getpid()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
