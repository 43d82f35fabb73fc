"""The load generator: one process, asyncio, N concurrent client coroutines (closed loop: each on a keep-alive
connection of its own, HTTP/1.1 written and read by hand; httpx for the other kinds).

Run by bench/run.py as a child: reads a JSON spec on stdin, prints one JSON result line on stdout.
Kinds:
  prepare  POST …/push-sessions; every `reuse_every`-th request of a client repeats its previous body
  get      GET of one object
  control  create a control command → the daemon's long-poll wakes → ack (wake-up latency and round trip)
  ingest   open loop: timeline batches `POST /v1/threads/{id}/events/ingest` at a fixed rate, round-robin over threads
  delivery streams open on a few threads, a writer ingests single events: ingest-to-stream delivery latency
  hold     keep `len(polls)` idle long-polls (or `len(streams)` idle event streams) open, re-issued when they
           return, until told to stop
Every loop is bounded in count and time; only loopback URLs are accepted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import ssl
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
        self.answered_at: list[float] = []
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
        self.answered_at.append(t1)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if not ok:
            self.errors += 1
            if len(self.error_samples) < 10:
                self.error_samples.append(f"{status}: {detail[:300]}")

    def note(self, name: str, t: float) -> None:
        if self.in_window(t):
            self.notes[name] = self.notes.get(name, 0) + 1

    def result(self, window: float, cpu: dict, *, timeline: bool = False) -> dict:
        """What the generator reports (one JSON line): the latencies, statuses, errors and its own CPU; with
        `timeline`, when each answer came too, in seconds into the window (`answered_s`, beside `latencies_ms`)."""
        timeline_fields = {"answered_s": [round(t - self.t_start, 3) for t in self.answered_at]} if timeline else {}
        return {
            **timeline_fields,
            "latencies_ms": [round(x, 3) for x in self.latencies_ms],
            "completed": len(self.latencies_ms),
            "window_s": window,
            "statuses": self.statuses,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "notes": self.notes,
            "generator_cpu_s": round(cpu.get("cpu_s", 0.0), 2),
        }

    def fail(self, t: float, detail: str) -> None:
        """An answer with the expected status but the wrong content (its latency is already recorded)."""
        if self.in_window(t):
            self.errors += 1
            if len(self.error_samples) < 10:
                self.error_samples.append(detail[:300])


_SSL = ssl.create_default_context()  # one for every client: building one per client costs ~10 ms (plain HTTP here)


def client_for(spec: dict, connections: int, token: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=spec["base_url"],
        headers={"Authorization": f"Bearer {token or spec['token']}"},
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=httpx.Timeout(spec.get("request_timeout", 60.0)),
        verify=_SSL,
    )


async def cpu_window(t_start: float, t_end: float, out: dict) -> None:
    """This process's CPU seconds over the window (to tell whether the generator itself saturates a core)."""
    await asyncio.sleep(max(0.0, t_start - time.perf_counter()))
    cpu0 = time.process_time()
    await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
    out["cpu_s"] = time.process_time() - cpu0


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """An HTTP/1.1 answer's status and header fields (names and values lowercased), read up to its blank line."""
    status = int((await reader.readline()).split()[1])
    fields = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        fields[name.strip().lower()] = value.strip().lower()
    return status, fields


async def chunks_of(reader: asyncio.StreamReader):
    """A chunked body's pieces as they arrive, up to its last (empty) chunk."""
    for _ in range(10_000_000):
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return
        data = await reader.readexactly(size)
        await reader.readexactly(2)  # the chunk's CRLF
        yield data


class RawResponse:
    def __init__(self, status_code: int, content: bytes):
        self.status_code, self.content = status_code, content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.content)


class RawClient:
    """One keep-alive HTTP/1.1 connection of one client coroutine, its requests written and its answers read by hand.

    The closed loops used to share one httpx.AsyncClient: it cost this process about 1 ms of CPU a request, and in
    bursts of seconds up to 0.9 of a core (without the bench extra's sniffio at every slow stretch, with it still in
    one window of six), CPU it took from the server it measured on this 2-core machine."""

    def __init__(self, base_url: str, token: str, timeout: float):
        url = urlsplit(base_url)
        self.host, self.port, self.timeout = url.hostname, url.port, timeout
        self.host_line = f"Host: {url.netloc}\r\n"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, *, params: dict | None = None, headers: dict | None = None) -> RawResponse:
        if params:
            path += "?" + "&".join(f"{name}={value}" for name, value in params.items())
        return await self.request("GET", path, b"", headers)

    async def post(self, path: str, *, content: bytes, headers: dict | None = None) -> RawResponse:
        return await self.request("POST", path, content, headers)

    async def request(self, method: str, path: str, body: bytes, headers: dict | None) -> RawResponse:
        fields = {**self.headers, **(headers or {})}
        head = self.host_line + "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        if body or method == "POST":
            head += f"Content-Length: {len(body)}\r\n"
        message = f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode() + body
        async with asyncio.timeout(self.timeout):
            reused = self.writer is not None
            try:
                return await self._exchange(message)
            except (OSError, asyncio.IncompleteReadError):
                self.close()
                if not reused:
                    raise
            # A kept-alive connection the server had closed before reading this request (nothing of it was taken
            # in): once more on a new one, as HTTP clients do.
            return await self._exchange(message)

    async def _exchange(self, message: bytes) -> RawResponse:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(message)
        status, fields = await read_head(self.reader)
        if fields.get("transfer-encoding") == "chunked":
            body = b"".join([piece async for piece in chunks_of(self.reader)])
            await self.reader.readuntil(b"\r\n")  # the empty trailer: the connection is read up to the next answer
        else:
            body = await self.reader.readexactly(int(fields.get("content-length", "0")))
        if fields.get("connection") == "close":
            self.close()
        return RawResponse(status, body)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def closed_loop(spec: dict, make_step) -> dict:
    """`spec['clients']` coroutines, each calling its step until the window ends or `max_per_client` calls; each
    has a `RawClient` of its own (`spec['_clients'][index]`)."""
    start = time.perf_counter()
    t_start = start + spec["warmup"]
    t_end = t_start + spec["duration"]
    recorder = Recorder(t_start, t_end)
    cpu: dict = {}
    timeout = spec.get("request_timeout", 60.0)
    spec["_clients"] = [RawClient(spec["base_url"], spec["token"], timeout) for _ in range(spec["clients"])]

    async def worker(index: int):
        step = make_step(index, recorder)
        # Connect one client at a time: a burst of connects is accepted whole by the first worker to wake up
        # (asyncio accepts up to the backlog per wake-up), and keep-alive would pin the whole load on it.
        await asyncio.sleep(index * spec.get("stagger_s", 0.03))
        for k in range(spec["max_per_client"]):
            if time.perf_counter() >= t_end:
                return
            await step(k)

    try:
        await asyncio.gather(cpu_window(t_start, t_end, cpu), *(worker(i) for i in range(spec["clients"])))
    finally:
        for client in spec["_clients"]:
            client.close()
    return recorder.result(spec["duration"], cpu, timeline=spec.get("timeline", False))


async def timed(recorder: Recorder, request, expected: set[int], on_response=None, t0: float | None = None):
    """`t0`: when the request was due (an open loop's schedule), so time queued for a connection counts too."""
    t0 = time.perf_counter() if t0 is None else t0
    try:
        response = await request()
    except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the run
        recorder.record(t0, time.perf_counter(), "exception", False, repr(exc))
        return None
    t1 = time.perf_counter()
    ok = response.status_code in expected
    recorder.record(t0, t1, str(response.status_code), ok, "" if ok else response.text)
    if ok and on_response is not None:
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
            client = spec["_clients"][index]
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
            await timed(recorder, lambda: spec["_clients"][index].get(spec["path"]), {200})

        return step

    return make_step


# --- control command round trips -------------------------------------------------------------------------------------


async def create_command(recorder: Recorder, user_client, base: str) -> tuple[float, float, str | None]:
    """Create a `message` control command at `base` (…/control): (sent, answered, its id; None if refused)."""
    t0 = time.perf_counter()
    response = await timed(
        recorder,
        lambda: user_client.post(base, json={"commandType": "message", "payload": {"text": "bench"}}),
        {201},
    )
    t1 = time.perf_counter()
    if response is None or response.status_code != 201:
        return t0, t1, None
    return t0, t1, response.json()["command"]["id"]


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
                t0, t1, command_id = await create_command(recorder, user_client, base)
                if command_id is None:
                    continue
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


# --- timeline events -----------------------------------------------------------------------------------------------

# What an agent's stdout looks like (the reference daemon sends one `output` event per line).
OUTPUT_LINES = [
    "tests/commands/test_events_ingest.py::test_batch_{n} PASSED                                  [ {p:>2}%]",
    "Compiling acp-agent v0.{p}.{n} (/home/bench/w{p}/crates/agent)",
    "INFO  2025-01-{d:02d}T10:{p:02d}:{d:02d}Z agent.tools: read_file path=src/module_{p}.py bytes={n}",
    '  File "/home/bench/w{p}/src/module_{p}.py", line {n}, in handle_request',
    "diff --git a/src/module_{p}.py b/src/module_{p}.py index 3f2a{n:04x}..9c1e{p:04x} 100644",
    "npm WARN deprecated glob@7.2.{p}: Glob versions prior to v9 are no longer supported",
    "[agent] thinking: the failing assertion in test_{n} compares sequences; checking the allocator next",
    "    Finished `release` profile [optimized] target(s) in {p}.{d}s",
]


def output_line(n: int) -> str:
    return OUTPUT_LINES[n % len(OUTPUT_LINES)].format(n=n, p=n % 97, d=n % 28 + 1)


def output_event(session_id: str, client_event_id: str, n: int, occurred_at: str, **extra) -> dict:
    """An `output` event as the reference daemon sends it (acp/daemon/events.py)."""
    return {
        "type": "output",
        "sessionId": session_id,
        "data": {"stream": "stdout", "line": output_line(n), **extra},
        "clientEventId": client_event_id,
        "occurredAt": occurred_at,
    }


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


async def open_loop(spec: dict, send) -> dict:
    """Requests due at a fixed rate (`spec['rate']` per second), each sent when due whatever is still unanswered;
    `send(k, due, recorder)` sends the k-th. Its latency runs from when it was due; the requests due in the window
    are the ones measured, however late they are answered (the slowest would otherwise fall out of the p99)."""
    start = time.perf_counter() + 0.1
    t_start = start + spec["warmup"]
    t_end = t_start + spec["duration"]
    recorder = Recorder(t_start, float("inf"))
    warming = Recorder(0.0, 0.0)  # the warm-up's requests: not measured
    cpu: dict = {}
    cpu_task = asyncio.create_task(cpu_window(t_start, t_end, cpu))
    rate = spec["rate"]
    total = min(int((spec["warmup"] + spec["duration"]) * rate), spec["max_requests"])
    pending: set[asyncio.Task] = set()
    lag_ms: list[float] = []
    for k in range(total):
        due = start + k / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if due >= t_start:
            lag_ms.append((time.perf_counter() - due) * 1000)
        task = asyncio.create_task(send(k, due, recorder if due >= t_start else warming))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await cpu_task
    if pending:
        await asyncio.wait(pending, timeout=spec.get("request_timeout", 60.0) + 5)
    lag_ms.sort()
    return recorder.result(spec["duration"], cpu) | {
        # What the server answered within the window (its CPU there is for these): fewer when it falls behind.
        "answered_in_window": sum(t_start <= t <= t_end for t in recorder.answered_at),
        "schedule_lag_ms": {
            "p99": round(lag_ms[int(0.99 * (len(lag_ms) - 1))], 2) if lag_ms else None,
            "max": round(lag_ms[-1], 2) if lag_ms else None,
        },
    }


async def ingest(spec: dict) -> dict:
    """Batches of `batch` output events, `rate` requests a second, round-robin over `threads` ([thread, session]),
    each thread a daemon with its own connection (device token). Every answer must say all were persisted."""
    threads, batch, run = spec["threads"], spec["batch"], spec["run"]
    lanes = [client_for(spec, 1, spec["device_token"]) for _ in threads]
    counters = [0] * len(threads)

    async def send(k: int, due: float, recorder: Recorder):
        lane = k % len(threads)
        thread_id, session_id = threads[lane]
        first, counters[lane] = counters[lane], counters[lane] + batch
        occurred = now_iso()
        events = [output_event(session_id, f"{session_id}:{run}:{n}", n, occurred) for n in range(first, first + batch)]
        body = json.dumps({"events": events}, separators=(",", ":")).encode()

        def on_response(response, t1):
            answer = response.json()
            if answer.get("persistedCount") != batch or answer.get("eventsProcessed") != batch:
                recorder.fail(t1, f"persisted {answer.get('persistedCount')} of {batch}: {response.text}")

        await timed(
            recorder,
            lambda: lanes[lane].post(
                f"/v1/threads/{thread_id}/events/ingest", content=body, headers={"Content-Type": "application/json"}
            ),
            {200},
            on_response,
            t0=due,
        )

    try:
        return await open_loop(spec, send)
    finally:
        for lane in lanes:
            await lane.aclose()


class StreamRefused(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after  # seconds, when the server said when to come back (a 503 of paced admission)


async def send_get(base_url: str, path: str, token: str, header: str):
    """A new connection to `base_url` with `GET path` written on it (the token, and one more header line): its reader
    and writer."""
    url = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {token}\r\n{header}\r\n\r\n".encode()
        )
        await writer.drain()
    except BaseException:
        writer.close()
        raise
    return reader, writer


class RawStream:
    """One `GET …/events?stream=true` on its own TCP connection, without httpx: a reader and a writer, so that
    2,000 of them cost the generator little. Reads chunked or plain bodies; yields SSE messages."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chunked: bool):
        self.reader, self.writer, self.chunked = reader, writer, chunked

    @classmethod
    async def open(cls, base_url: str, path: str, token: str) -> RawStream:
        reader, writer = await send_get(base_url, path, token, "Accept: text/event-stream")
        try:
            status, headers = await read_head(reader)
            if status != 200:
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                retry_after = headers.get("retry-after")
                raise StreamRefused(f"{status}: {body[:200]!r}", float(retry_after) if retry_after else None)
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer, headers.get("transfer-encoding") == "chunked")

    async def chunks(self):
        """The body's bytes as they arrive, until the server ends the stream."""
        if self.chunked:
            async for data in chunks_of(self.reader):
                yield data
            return
        for _ in range(10_000_000):
            data = await self.reader.read(65536)
            if not data:
                return
            yield data

    async def messages(self):
        """(id, data) of each SSE message with data; comments (heartbeats) are skipped."""
        buffer = b""
        async for data in self.chunks():
            buffer += data
            *blocks, buffer = buffer.split(b"\n\n")
            for block in blocks:
                fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if b": " in line and line[:1] != b":")
                if b"data" in fields:
                    yield fields.get(b"id", b"").decode(), fields[b"data"]

    def close(self) -> None:
        self.writer.close()


async def delivery(spec: dict) -> dict:
    """Streams (user token, `readers` per thread) open on a few threads; a writer per thread ingests one event at a
    time, `rate` a second (device token), its data carrying when it was sent. Each reader notes when it got each
    event. Both ends run in this process on one clock, time.perf_counter() (CLOCK_MONOTONIC)."""
    start = time.perf_counter()
    t_start = start + spec["warmup"]
    t_end = t_start + spec["duration"]
    recorder = Recorder(t_start, t_end)
    threads, per_thread, rate, run = spec["threads"], spec["readers"], spec["rate"], spec["run"]
    answered: dict[str, tuple[float, float]] = {}  # key → (sent, answered)
    received: dict[tuple[int, str], float] = {}  # (reader, key) → received
    connected = [asyncio.Event() for _ in range(len(threads) * per_thread)]
    stream_errors: list[str] = []
    cpu: dict = {}

    async def reader(index: int, thread_id: str):
        await asyncio.sleep(index * spec.get("stagger_s", 0.05))  # one at a time, so both workers get some
        path = f"/v1/threads/{thread_id}/events?stream=true"
        for _ in range(100):
            try:
                stream = await RawStream.open(spec["base_url"], path, spec["token"])
            except (OSError, StreamRefused, ValueError, IndexError) as exc:
                stream_errors.append(repr(exc))
                await asyncio.sleep(0.5)
                continue
            connected[index].set()
            try:
                async for _, data in stream.messages():
                    t = time.perf_counter()
                    event = json.loads(data)
                    key = event["data"].get("benchKey")
                    if key is not None:
                        received[(index, key)] = t
                        if t - event["data"]["benchSentAt"] < 0:  # cannot be, on one clock
                            stream_errors.append(f"received before sent: {key}")
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                stream_errors.append(repr(exc))
            finally:
                stream.close()
            if time.perf_counter() >= t_end:
                return
            stream_errors.append("the server ended a stream within the window (ACP_STREAM_MAX_SECONDS too short?)")

    async def writer(client, lane: int, thread_id: str, session_id: str):
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in connected)), timeout=30)
        # Threads out of phase, each at `rate` a second with ±50 % jitter (deterministic: seeded per lane).
        jitter = random.Random(lane)
        await asyncio.sleep(lane / (rate * len(threads)))
        for n in range(int((spec["warmup"] + spec["duration"]) * rate) + 1):
            if time.perf_counter() >= t_end:
                return
            key = f"{lane}:{n}"
            t0 = time.perf_counter()
            event = output_event(session_id, f"{session_id}:{run}:{n}", n, now_iso(), benchKey=key, benchSentAt=t0)
            response = await timed(
                recorder,
                lambda event=event: client.post(f"/v1/threads/{thread_id}/events/ingest", json={"events": [event]}),
                {200},
                t0=t0,
            )
            if response is not None and response.status_code == 200:
                answered[key] = (t0, time.perf_counter())
            await asyncio.sleep(jitter.uniform(0.5, 1.5) / rate)

    readers = [
        asyncio.create_task(reader(t * per_thread + r, thread_id))
        for t, (thread_id, _) in enumerate(threads)
        for r in range(per_thread)
    ]
    async with client_for(spec, len(threads), spec["device_token"]) as client:
        cpu_task = asyncio.create_task(cpu_window(t_start, t_end, cpu))
        await asyncio.gather(*(writer(client, lane, t, s) for lane, (t, s) in enumerate(threads)))
        await cpu_task
    # Give the last events a moment to arrive, then stop reading.
    due = [(i, key) for key, (t0, _) in answered.items() if recorder.in_window(t0) for i in readers_of(key, per_thread)]
    for _ in range(40):
        if all(k in received for k in due):
            break
        await asyncio.sleep(0.05)
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    after_sent, after_answer, missing = [], [], 0
    for index, key in due:
        t_sent, t_answer = answered[key]
        if (index, key) not in received:
            missing += 1
            continue
        after_sent.append((received[(index, key)] - t_sent) * 1000)
        after_answer.append((received[(index, key)] - t_answer) * 1000)
    return {
        "latencies_ms": [round(x, 3) for x in recorder.latencies_ms],  # the ingest requests
        "delivery_after_sent_ms": [round(x, 3) for x in after_sent],
        "delivery_after_answer_ms": [round(x, 3) for x in after_answer],
        "deliveries_due": len(due),
        "missing": missing,
        "stream_errors": len(stream_errors),
        "error_samples": recorder.error_samples + stream_errors[:10],
        "errors": recorder.errors + missing + len(stream_errors),
        "statuses": recorder.statuses,
        "notes": recorder.notes,
        "window_s": spec["duration"],
        "generator_cpu_s": round(cpu.get("cpu_s", 0.0), 2),
    }


def readers_of(key: str, per_thread: int) -> range:
    lane = int(key.split(":", 1)[0])
    return range(lane * per_thread, (lane + 1) * per_thread)


# --- idle long-polls -------------------------------------------------------------------------------------------------


async def hold(spec: dict) -> dict:
    """Hold one connection per target open, re-opened when it returns, until the stop file appears or the deadline:
    long-polls (`polls`: [path, token], httpx) or event streams (`streams`: [path, token], raw connections)."""
    streams = "streams" in spec
    targets = spec["streams"] if streams else spec["polls"]
    per_client = spec.get("connections_per_client", 100)
    stop_file = Path(spec["stop_file"])
    status_file = Path(spec["status_file"])
    deadline = time.monotonic() + spec["max_seconds"]
    ramp = spec["ramp_s"]
    state = {"in_flight": 0, "sent": 0, "returned": 0, "errors": 0, "error_samples": []}
    clients = [] if streams else [client_for(spec, per_client + 1) for _ in range(0, len(targets), per_client)]
    stopping = asyncio.Event()

    async def poll_once(index: int, path: str, token: str) -> str:
        """One long-poll; "" when it answered 200, else what went wrong."""
        state["in_flight"] += 1
        try:
            response = await clients[index // per_client].get(
                path, params={"wait": spec.get("wait", 30)}, headers={"Authorization": f"Bearer {token}"}
            )
            return "" if response.status_code == 200 else f"{response.status_code}: {response.text[:200]}"
        finally:
            state["in_flight"] -= 1

    async def stream_once(index: int, path: str, token: str) -> str:
        """One event stream, read (and dropped) until the server ends it; in flight once its headers are in."""
        stream = await RawStream.open(spec["base_url"], path, token)
        state["in_flight"] += 1
        try:
            async for _ in stream.chunks():
                pass
        finally:
            state["in_flight"] -= 1
            stream.close()
        return ""

    once = stream_once if streams else poll_once

    async def holder(index: int, path: str, token: str):
        await asyncio.sleep(ramp * index / len(targets))
        for _ in range(10_000):
            if stopping.is_set():
                return
            state["sent"] += 1
            try:
                detail = await once(index, path, token)
            except Exception as exc:  # noqa: BLE001
                detail = repr(exc)
            state["returned"] += 1
            if detail:
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

    tasks = [asyncio.create_task(holder(i, path, token)) for i, (path, token) in enumerate(targets)]
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
    elif kind == "ingest":
        result = asyncio.run(ingest(spec))
    elif kind == "delivery":
        result = asyncio.run(delivery(spec))
    elif kind == "hold":
        result = asyncio.run(hold(spec))
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    result["pid"] = os.getpid()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
