"""The load benchmark: `.venv/bin/python bench/run.py [--quick] [--profile] [--only S1,S2…]` (see README, "Benchmarks").

Starts a throwaway PostgreSQL and the production server (gunicorn + uvicorn workers, DATABASE_POOL=1, DEBUG=0)
on 127.0.0.1, creates its data through the ORM, drives the server with an asyncio httpx load generator
(bench/loadgen.py, a separate process) and prints, per scenario, throughput, p50/p99 latency and errors:

  prepare-spread   prepare push sessions over 64 bindings, one request in four a reuse (200), else 201
  prepare-hot      the same on one binding
  get-floor        the framework floor: an authenticated GET of one project
  control          control command create → the daemon's long-poll wakes → ack (wake-up latency)
  db-floor         the prepare's SQL (as captured from a real prepare) replayed with psycopg from N threads
  idle-polls       on a separate single-worker server: prepare-spread without, then with 5,000 idle long-polls
                   held open (opened over 100 s, wait=300 so none returns during the window, and no
                   timer re-check, as with the default wait cap of 30 s)
  ratelimit        on a separate server each: prepare-spread with rate limiting off, then on (the limits shared
                   in a throwaway redis-server, budgets out of reach so nothing is refused): what counting costs.
                   The other scenarios run with rate limiting off.
  ingest           timeline ingest, open loop: 40 batches of 50 output events a second (2,000 events/s) over
                   100 threads, each its daemon's own connection (device token)
  delivery         ingest-to-stream delivery: 2 streams on each of 4 threads, one event at a time ingested into
                   each thread ~5 times a second; receive − sent, on the generator's monotonic clock
  idle-streams     as idle-polls, with 2,000 idle event streams (GET …/events?stream=true, 20 per thread) held

Writes everything to bench/results/<timestamp>.json. Everything stops at exit, also on failure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import CpuMeter, Postgres, Redis, Server, log, summarise  # noqa: E402

SCENARIOS = [
    "prepare-spread", "prepare-hot", "get-floor", "control", "ingest", "delivery", "db-floor", "idle-polls",
    "idle-streams", "ratelimit",
]  # fmt: skip
TIMELINE_SCENARIOS = {"ingest", "delivery", "idle-streams"}
BINDINGS = 64
IDLE_POLLS = 5000
CONTROL_SESSIONS = 16
# Threads with a running session on the bench device, per timeline scenario (each its own: no backlog of another's).
TIMELINE_THREADS = {"ingest": 100, "delivery": 4, "watch": 100}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short durations (about 4½ minutes in all)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of the main server (default 2)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--generators", type=int, default=1, help="load generator processes (default 1)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {','.join(SCENARIOS)}")
    parser.add_argument(
        "--control-sessions", type=int, default=4, help="sessions of the control round trips, each its own daemon (4)"
    )
    parser.add_argument("--idle-polls", type=int, default=IDLE_POLLS, help="idle long-polls of idle-polls (5000)")
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=300.0,
        help=(
            "their wait= (300: held open through the measured window); above 30 the idle-polls server gets "
            "ACP_LONG_POLL_MAX_WAIT raised to match. 30 = daemons re-polling every 30 s (5,000 → 167 arrivals/s)"
        ),
    )
    parser.add_argument("--idle-ramp", type=float, default=100.0, help="seconds over which they are opened (100)")
    parser.add_argument(
        "--idle-recheck",
        type=float,
        default=None,
        help="the idle-polls server's ACP_LONG_POLL_RECHECK (default: the wait, i.e. no timer re-check, as at wait≤30)",
    )
    parser.add_argument(
        "--idle-streams", type=int, default=2000, help="idle event streams of idle-streams, over 100 threads (2000)"
    )
    parser.add_argument("--stream-ramp", type=float, default=20.0, help="seconds over which they are opened (20)")
    parser.add_argument(
        "--stream-heartbeat",
        type=float,
        default=None,
        help="the idle-streams server's ACP_STREAM_HEARTBEAT (default: the server's, 15 s)",
    )
    parser.add_argument("--ingest-rate", type=float, default=40.0, help="ingest requests a second (40)")
    parser.add_argument("--ingest-batch", type=int, default=50, help="events per ingest request (50)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, profile the main server's workers with py-spy under prepare (and under ingest, if chosen)",
    )
    return parser.parse_args()


# --- data ----------------------------------------------------------------------------------------------------------


def create_data(idle_polls: int, timeline: bool) -> dict:
    """A user with a token, a project, a device with a device token, 65 bindings, 16 running sessions,
    `idle_polls` further devices with their own device tokens (the idle daemons), and (`timeline`) the timeline
    scenarios' threads, each with a running session on the device."""
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from acp.choices import ApiTokenKind
    from acp.models import ApiToken, Device, Environment, Project, User
    from acp.services import TOKEN_PREFIX, token_create, token_hash
    from bindings.models import WorkspaceBinding
    from commands.services import local_session_create, thread_create

    call_command("migrate", verbosity=0, interactive=False)
    now = timezone.now()
    user = User.objects.create_user("bench", password=None)
    project = Project.objects.create(user=user, name="bench project")
    environment = Environment.objects.create(user=user, name="bench computer")
    device = Device.objects.create(user=user, name="bench laptop", platform="linux", last_seen_at=now)
    user_token = token_create(user=user, name="bench").raw
    device_token = token_create(user=user, device=device, name="bench daemon").raw
    bindings = WorkspaceBinding.objects.bulk_create(
        [
            WorkspaceBinding(
                user=user, device=device, environment=environment, project=project, local_path=f"/home/bench/w{i}"
            )
            for i in range(BINDINGS + 1)
        ]
    )
    sessions = []
    for i in range(CONTROL_SESSIONS):
        thread = thread_create(user=user, environment=environment, title=f"bench thread {i}")
        session = local_session_create(user=user, thread=thread, device=device, status="running")
        sessions.append([str(thread.pk), str(session.pk)])
    timeline_threads = {}
    for group, count in TIMELINE_THREADS.items() if timeline else ():
        timeline_threads[group] = []
        for i in range(count):
            thread = thread_create(user=user, environment=environment, title=f"bench {group} {i}")
            session = local_session_create(user=user, thread=thread, device=device, status="running")
            timeline_threads[group].append([str(thread.pk), str(session.pk)])

    daemons = Device.objects.bulk_create(
        [Device(user=user, name=f"idle daemon {i}", platform="linux", last_seen_at=now) for i in range(idle_polls)],
        batch_size=1000,
    )
    raws = [TOKEN_PREFIX + uuid.uuid4().hex + uuid.uuid4().hex for _ in daemons]
    ApiToken.objects.bulk_create(
        [
            ApiToken(
                user=user,
                kind=ApiTokenKind.DEVICE,
                device=d,
                name="idle",
                key_prefix=raw[:12],
                key_hash=token_hash(raw),
                created_at=now,
            )
            for d, raw in zip(daemons, raws, strict=True)
        ],
        batch_size=1000,
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {
        "user": user,
        "user_token": user_token,
        "device_token": device_token,
        "project_id": str(project.pk),
        "bindings": [str(b.pk) for b in bindings[:BINDINGS]],
        "hot_binding": str(bindings[BINDINGS].pk),
        "sessions": sessions,
        "timeline": timeline_threads,
        "idle_polls": [[f"/api/v1/machines/{d.pk}/launches", raw] for d, raw in zip(daemons, raws, strict=True)],
    }


def capture_prepare_sql(data: dict) -> dict:
    """The statements one prepare runs, as Django sends them (sql, params, in a transaction?), for the db floor.

    Captured through a real request (Django's test client, in this process) with an execute wrapper; the
    transaction boundaries (BEGIN/COMMIT) come from `CaptureQueriesContext`.
    """
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    sys.path.insert(0, str(common.BENCH))
    from loadgen import prepare_body

    binding = data["bindings"][0]
    client = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {data['user_token']}")
    url = f"/v1/workspace-bindings/{binding}/push-sessions"

    def run(signature: str, expected: int):
        statements = []

        def wrapper(execute, sql, params, many, context):
            statements.append((sql, params, context["connection"].in_atomic_block))
            return execute(sql, params, many, context)

        with connection.execute_wrapper(wrapper), CaptureQueriesContext(connection) as logged:
            response = client.post(url, prepare_body(signature), content_type="application/json")
        assert response.status_code == expected, (response.status_code, response.content)
        return statements, [q["sql"] for q in logged.captured_queries], response.json()

    run("sha256:warm-up", 201)  # the token's first use records lastUsedAt; later ones do not (60 s)
    signature = f"sha256:{uuid.uuid4().hex}"
    new, new_logged, body = run(signature, 201)
    reuse, reuse_logged, _ = run(signature, 200)
    connection.close()
    return {
        "binding": uuid.UUID(binding),
        "signature": signature,
        "session_id": uuid.UUID(body["pushSession"]["id"]),
        "new": new,
        "reuse": reuse,
        "logged_new": new_logged,
        "logged_reuse": reuse_logged,
    }


# --- scenarios -----------------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.warmup = 2.0 if args.quick else 5.0
        self.duration = 8.0 if args.quick else 30.0
        self.results: dict = {"scenarios": {}}

    def generators(self, server: Server, spec: dict) -> dict:
        """Run the spec in `--generators` processes, clients split between them; merge their results."""
        count = max(1, min(self.args.generators, spec["clients"]))
        specs = []
        for g in range(count):
            part = dict(spec)
            indexes = list(range(g, spec["clients"], count))
            part["clients"] = len(indexes)
            if "client_bindings" in spec:
                part["client_bindings"] = [spec["client_bindings"][i] for i in indexes]
            specs.append(part)
        meter = CpuMeter(self.cpu_groups(server))
        processes = [common.start_child("loadgen.py", part) for part in specs]
        time.sleep(spec["warmup"])
        meter.start()
        connections = list(common.connections_per_process(server.port, server.worker_pids()).values())
        time.sleep(spec["duration"])
        cpu = meter.stop()
        timeout = spec["warmup"] + spec["duration"] + 120
        parts = [common.finish_child(p, timeout=timeout) for p in processes]
        merged = {
            "latencies_ms": [x for part in parts for x in part["latencies_ms"]],
            "errors": sum(part["errors"] for part in parts),
            "error_samples": [s for part in parts for s in part["error_samples"]][:10],
            "statuses": {},
            "notes": {},
            "generator_cpu_cores": [round(part["generator_cpu_s"] / spec["duration"], 2) for part in parts],
            "cpu": cpu,
            "connections_per_worker": connections,
        }
        for part in parts:
            for key in ("statuses", "notes"):
                for name, value in part[key].items():
                    merged[key][name] = merged[key].get(name, 0) + value
        return merged

    def measured_child(self, server: Server, spec: dict) -> tuple[dict, dict]:
        """One load generator process running `spec`; its result, and the CPU used in its window."""
        meter = CpuMeter(self.cpu_groups(server))
        process = common.start_child("loadgen.py", spec)
        time.sleep(spec["warmup"])
        meter.start()
        connections = list(common.connections_per_process(server.port, server.worker_pids()).values())
        time.sleep(spec["duration"])
        cpu = meter.stop()
        raw = common.finish_child(process, timeout=spec["warmup"] + spec["duration"] + 120)
        raw["connections_per_worker"] = connections
        return raw, cpu

    def cpu_groups(self, server: Server | None) -> dict:
        groups = {"postgres": self.pg.pids}
        if server is not None:
            groups["server"] = server.pids
        return groups

    def http_spec(self, server: Server, kind: str, **extra) -> dict:
        return {
            "kind": kind,
            "base_url": server.url,
            "token": self.data["user_token"],
            "clients": self.args.clients,
            "warmup": self.warmup,
            "duration": self.duration,
            "max_per_client": 1_000_000,
            # A request still unanswered well after the window (a starved server) need not hold the run up.
            "request_timeout": self.warmup + self.duration + 10,
            **extra,
        }

    def prepare_spec(self, server: Server, hot: bool) -> dict:
        clients = self.args.clients
        if hot:
            client_bindings = [[self.data["hot_binding"]] for _ in range(clients)]
        else:
            # Each client owns its bindings, so its reuse of its previous body must answer 200.
            client_bindings = [
                self.data["bindings"][i::clients] or [self.data["bindings"][i % BINDINGS]] for i in range(clients)
            ]
        return self.http_spec(server, "prepare", client_bindings=client_bindings, hot=hot, reuse_every=4)

    def record(self, name: str, raw: dict, *, window: float, extra: dict | None = None) -> dict:
        latencies = raw.pop("latencies_ms")
        result = {
            "throughput_rps": round(len(latencies) / window, 1),
            "requests": len(latencies),
            **summarise(latencies),
            "errors": raw["errors"],
            **{k: v for k, v in raw.items() if k != "errors"},
            **(extra or {}),
        }
        self.results["scenarios"][name] = result
        self.print_row(name, result)
        return result

    def print_row(self, name: str, r: dict) -> None:
        cpu = r.get("cpu", {})
        print(
            f"{name:<26} {r['throughput_rps']:>7.1f} req/s   p50 {_ms(r['p50_ms'])} ms   p99 {_ms(r['p99_ms'])} ms"
            f"   errors {r['errors']:>3}   | {_cpu_note(r, cpu)}",
            flush=True,
        )
        for sample in r.get("error_samples", [])[:3]:
            print(f"    error: {sample}", flush=True)

    def warm(self, server: Server) -> None:
        """Unmeasured load first: each worker's lazy imports and its connection pool's growth are not a scenario's."""
        log(f"warm-up: {self.warmup:g}s of prepares and GETs, not measured")
        spec = self.prepare_spec(server, hot=False)
        self.generators(server, {**spec, "warmup": self.warmup, "duration": 1.0})
        spec = self.http_spec(server, "get", path=f"/v1/projects/{self.data['project_id']}")
        self.generators(server, {**spec, "warmup": 1.0, "duration": 1.0})

    # -- 1, 4
    def run_prepare(self, server: Server, name: str, hot: bool) -> dict:
        log(f"{name}: {self.args.clients} clients, {self.warmup:g}s warm-up + {self.duration:g}s")
        raw = self.generators(server, self.prepare_spec(server, hot))
        return self.record(name, raw, window=self.duration)

    def run_get(self, server: Server) -> dict:
        log(f"get-floor: GET /v1/projects/{{id}}, {self.args.clients} clients")
        raw = self.generators(server, self.http_spec(server, "get", path=f"/v1/projects/{self.data['project_id']}"))
        return self.record("get-floor", raw, window=self.duration)

    # -- 2
    def run_control(self, server: Server) -> dict:
        sessions = self.data["sessions"][: self.args.control_sessions]
        log(f"control: {len(sessions)} sessions, each create → long-poll wake-up → ack, 200–400 ms apart")
        spec = self.http_spec(
            server,
            "control",
            device_token=self.data["device_token"],
            sessions=sessions,
            max_rounds=10_000,
            gap_s=[0.2, 0.4],
            clients=len(sessions),
        )
        raw, cpu = self.measured_child(server, spec)
        wake, delivery, round_trip = raw.pop("wake_ms"), raw.pop("delivery_ms"), raw.pop("round_trip_ms")
        create = raw.pop("create_ms")
        result = {
            "round_trips": raw["round_trips"],
            "round_trips_per_s": round(raw["round_trips"] / self.duration, 1),
            "wake_up": summarise(wake),
            "create_to_poller": summarise(delivery),
            "round_trip": summarise(round_trip),
            "create": summarise(create),
            "errors": raw["errors"],
            "error_samples": raw["error_samples"],
            "statuses": raw["statuses"],
            "poll_timeouts": raw["poll_timeouts"],
            "generator_cpu_cores": [round(raw["generator_cpu_s"] / self.duration, 2)],
            "cpu": cpu,
        }
        self.results["scenarios"]["control"] = result
        print(
            f"{'control round trip':<24} {result['round_trips_per_s']:>8.1f} rt/s    "
            f"wake-up p50 {result['wake_up']['p50_ms']} ms p99 {result['wake_up']['p99_ms']} ms   "
            f"round trip p50 {result['round_trip']['p50_ms']} ms p99 {result['round_trip']['p99_ms']} ms   "
            f"errors {result['errors']}",
            flush=True,
        )
        return result

    # -- 5
    def run_db_floor(self) -> dict:
        log(f"db-floor: the prepare's SQL with psycopg from {self.args.clients} threads")
        raw = db_floor(
            self.pg.conninfo,
            self.captured,
            self.prepare_spec_bindings(),
            warmup=self.warmup,
            duration=self.duration,
            meter=CpuMeter(self.cpu_groups(None)),
        )
        return self.record("db-floor", raw, window=self.duration)

    def prepare_spec_bindings(self):
        clients = self.args.clients
        return [self.data["bindings"][i::clients] or [self.data["bindings"][i % BINDINGS]] for i in range(clients)]

    def run_ratelimit(self) -> None:
        """prepare-spread on a fresh server with rate limiting off, then on a fresh one with it on (Redis)."""
        redis = Redis().start()
        log(f"ratelimit: prepare-spread on {self.args.workers} workers, rate limiting off then on ({redis.url})")
        unreachable = "1000000000/minute"
        modes = {
            "prepare-spread ratelimit off": {"ACP_RATELIMIT_ENABLED": "0"},
            "prepare-spread ratelimit on": {
                "ACP_RATELIMIT_ENABLED": "1",
                "ACP_RATELIMIT_STORAGE_URL": redis.url,
                "ACP_RATELIMIT_USER": unreachable,
                "ACP_RATELIMIT_DEVICE": unreachable,
            },
        }
        try:
            for name, env in modes.items():
                server = Server(self.pg.url, workers=self.args.workers, env=env).start()
                try:
                    self.warm(server)
                    raw = self.generators(server, self.prepare_spec(server, hot=False))
                    self.record(name, raw, window=self.duration)
                finally:
                    server.stop()
        finally:
            redis.stop()

    # -- 3
    def run_idle_polls(self) -> dict:
        count = len(self.data["idle_polls"])
        wait, ramp = self.args.idle_wait, self.args.idle_ramp
        # Waits within the default cap (30 s) never re-check on the timer (ACP_LONG_POLL_RECHECK, 60 s); a longer
        # wait, there only to keep the polls open through the window, keeps it that way unless --idle-recheck says.
        recheck = self.args.idle_recheck if self.args.idle_recheck is not None else max(60.0, wait)
        env = {"ACP_LONG_POLL_RECHECK": str(recheck)}
        if wait > 30:
            env["ACP_LONG_POLL_MAX_WAIT"] = str(wait)
        log(f"idle-polls: the server's ACP_LONG_POLL_MAX_WAIT={max(30.0, wait):g}, ACP_LONG_POLL_RECHECK={recheck:g}")
        return self.run_idle(
            name="idle-polls",
            rows=("prepare-spread 1 worker", "prepare-spread +idle polls"),
            what=f"long-polls (wait={wait:g}, one device token each)",
            env=env,
            holder={"polls": self.data["idle_polls"], "wait": wait, "request_timeout": max(90.0, wait + 60)},
            ramp=ramp,
            settle_max=60 if wait > 30 else 5,
            extra={"idle_polls": count, "idle_wait_s": wait, "idle_recheck_s": recheck},
        )

    def run_idle_streams(self) -> dict:
        threads = self.data["timeline"]["watch"]
        count, heartbeat = self.args.idle_streams, self.args.stream_heartbeat
        streams = [
            [f"/v1/threads/{threads[i % len(threads)][0]}/events?stream=true", self.data["user_token"]]
            for i in range(count)
        ]
        return self.run_idle(
            name="idle-streams",
            rows=("prepare-spread 1 worker (streams)", "prepare-spread +idle streams"),
            what=f"event streams over {len(threads)} threads (user token; nothing is ingested into them)",
            env={} if heartbeat is None else {"ACP_STREAM_HEARTBEAT": str(heartbeat)},
            holder={"streams": streams},
            ramp=self.args.stream_ramp,
            settle_max=10,
            extra={"idle_streams": count, "stream_threads": len(threads), "stream_heartbeat_s": heartbeat or 15.0},
        )

    def run_idle(
        self, *, name: str, rows: tuple[str, str], what: str, env: dict, holder: dict, ramp: float, settle_max: float,
        extra: dict,
    ) -> dict:  # fmt: skip
        """On a separate single-worker server (one process: the idle connections and the requests share it):
        prepare-spread without, then with the `holder`'s idle connections held open through the window."""
        count = len(holder.get("polls") or holder["streams"])
        log(f"{name}: a separate single-worker server (one process) for prepare-spread without/with them")
        server = Server(self.pg.url, workers=1, env=env).start()
        try:
            self.warm(server)
            worker = server.worker_pids()[0]
            without = self.generators(server, self.prepare_spec(server, hot=False))
            without_row = self.record(rows[0], without, window=self.duration)
            rss_without = common.rss_mb(worker)
            log(f"{name}: opening {count} {what} over {ramp:.0f}s")
            cpu_before_ramp = common.cpu_seconds([worker])
            tmp = Path(tempfile.mkdtemp(prefix="acp-bench-hold."))
            stop_file, status_file = tmp / "stop", tmp / "status"
            holder_process = common.start_child(
                "loadgen.py",
                {
                    "kind": "hold",
                    "base_url": server.url,
                    "token": self.data["user_token"],
                    "ramp_s": ramp,
                    "stop_file": str(stop_file),
                    "status_file": str(status_file),
                    "max_seconds": ramp + 3 * (self.warmup + self.duration) + 180,
                    **holder,
                },
            )
            common.at_exit(lambda: shutil.rmtree(tmp, ignore_errors=True))
            common.at_exit(lambda: stop_file.touch() if tmp.exists() else None)
            time.sleep(ramp)
            # All of them taken in (a stream counts once its headers are in; a poll once sent), then the worker quiet.
            settled = wait_for_holder(status_file, count, max_seconds=120) + settle(worker, max_seconds=settle_max)
            before = read_status(status_file)
            taken_in = before.get("sent", 0)
            # The worker's CPU from the first connection to the settled state, per connection: taking one in.
            arrival_ms = 1000 * (common.cpu_seconds([worker]) - cpu_before_ramp) / max(1, taken_in)
            rss_before = common.rss_mb(worker)
            threads_before = common.thread_count(worker)
            log(f"{name}: holder {before}; worker RSS {rss_before:.0f} MB, {threads_before} threads")
            with_held = self.generators(server, self.prepare_spec(server, hot=False))
            after = read_status(status_file)
            stop_file.touch()
            held = common.finish_child(holder_process, timeout=60)
            extra = {
                **extra,
                "ramp_s": ramp,
                "settle_s": settled,
                "holder_before": before,
                "holder_after": after,
                "holder_final": held,
                "server_cpu_ms_per_connection_taken_in": round(arrival_ms, 2),
                "worker_rss_mb": round(rss_before, 1),
                "worker_rss_mb_without": round(rss_without, 1),
                "worker_rss_kb_per_connection": round(1024 * (rss_before - rss_without) / max(1, count), 1),
                "worker_threads": threads_before,
                "reopened_per_s_in_window": round(
                    (after.get("returned", 0) - before.get("returned", 0)) / max(1e-9, after["t"] - before["t"]), 1
                )
                if after and before
                else None,
            }
            returned = after.get("returned", 0) - before.get("returned", 0)
            if returned > 0:
                # Upper bound of one re-opening's cost: the prepares completed in the window cost CPU too.
                extra["server_cpu_ms_per_reopen_at_most"] = round(1000 * with_held["cpu"]["server_cpu_s"] / returned, 1)
            with_row = self.record(rows[1], with_held, window=self.duration, extra=extra)
            print(
                f"    {before.get('in_flight')} of {count} idle {what.split(' (')[0]} open (client side) before, "
                f"{after.get('in_flight')} after; taking one in cost the worker {arrival_ms:.1f} ms CPU; "
                f"it held {threads_before} threads, {rss_before:.0f} MB RSS ({rss_without:.0f} MB without: "
                f"{extra['worker_rss_kb_per_connection']} kB each); "
                f"answered and re-opened {extra['reopened_per_s_in_window']}/s"
                + (
                    f" (≤ {extra['server_cpu_ms_per_reopen_at_most']} ms server CPU each)"
                    if "server_cpu_ms_per_reopen_at_most" in extra
                    else ""
                )
                + f"; holder errors {held['errors']}",
                flush=True,
            )
            for sample in held.get("error_samples", [])[:3]:
                print(f"    holder error: {sample}", flush=True)
            return {"without": without_row, "with": with_row}
        finally:
            server.stop()

    # -- timeline
    def timeline_spec(self, server: Server, kind: str, threads: list, **extra) -> dict:
        return self.http_spec(
            server,
            kind,
            device_token=self.data["device_token"],
            threads=threads,
            run=uuid.uuid4().hex[:8],  # client event ids unique to this run
            **extra,
        )

    def ingest_spec(self, server: Server) -> dict:
        threads, rate, batch = self.data["timeline"]["ingest"], self.args.ingest_rate, self.args.ingest_batch
        # Every thread's connection opened (its first request) before the window.
        warmup = max(self.warmup, len(threads) / rate + 0.5)
        return self.timeline_spec(
            server, "ingest", threads, rate=rate, batch=batch, max_requests=100_000, warmup=warmup
        )

    def run_ingest(self, server: Server) -> dict:
        threads = self.data["timeline"]["ingest"]
        rate, batch = self.args.ingest_rate, self.args.ingest_batch
        log(f"ingest: {rate:g} batches of {batch} events a second into {len(threads)} threads, open loop")
        raw, cpu = self.measured_child(server, self.ingest_spec(server))
        raw["cpu"] = cpu
        raw["generator_cpu_cores"] = [round(raw.pop("generator_cpu_s") / self.duration, 2)]
        raw.pop("completed", None)
        raw.pop("window_s", None)
        events = raw["answered_in_window"] * batch
        extra = {
            "asked_rps": rate,
            "batch": batch,
            "threads": len(threads),
            "events_per_s": round(events / self.duration, 1),  # answered within the window
            "server_cpu_ms_per_event": round(1000 * cpu["server_cpu_s"] / max(1, events), 3),
            "postgres_cpu_ms_per_event": round(1000 * cpu["postgres_cpu_s"] / max(1, events), 3),
        }
        row = self.record("ingest", raw, window=self.duration, extra=extra)
        print(
            f"    {rate * batch:g} events/s asked, {row['events_per_s']}/s answered within the window; server "
            f"{row['server_cpu_ms_per_event']} ms CPU/event, postgres {row['postgres_cpu_ms_per_event']} ms CPU/event; "
            f"the generator's schedule lag p99 {row['schedule_lag_ms']['p99']} ms",
            flush=True,
        )
        return row

    def run_delivery(self, server: Server) -> dict:
        threads = self.data["timeline"]["delivery"]
        rate, readers = 5.0, 2
        log(f"delivery: {readers} streams on each of {len(threads)} threads, one event at a time, ~{rate:g}/s each")
        raw, cpu = self.measured_child(
            server, self.timeline_spec(server, "delivery", threads, rate=rate, readers=readers)
        )
        after_sent, after_answer = raw.pop("delivery_after_sent_ms"), raw.pop("delivery_after_answer_ms")
        ingest_ms = raw.pop("latencies_ms")
        result = {
            "clock": "time.perf_counter() (CLOCK_MONOTONIC) of the generator process, which runs readers and writers",
            "events_per_s": round(len(ingest_ms) / self.duration, 1),
            "streams": readers * len(threads),
            "delivered": len(after_sent),
            "receive_minus_sent": summarise(after_sent),
            "receive_minus_answer": summarise(after_answer),
            "ingest": summarise(ingest_ms),
            **{k: v for k, v in raw.items() if k != "generator_cpu_s"},
            "generator_cpu_cores": [round(raw["generator_cpu_s"] / self.duration, 2)],
            "cpu": cpu,
        }
        self.results["scenarios"]["delivery"] = result
        sent, answer = result["receive_minus_sent"], result["receive_minus_answer"]
        print(
            f"{'delivery':<26} {result['events_per_s']:>7.1f} ev/s    receive − sent p50 {sent['p50_ms']} ms "
            f"p99 {sent['p99_ms']} ms   receive − answer p50 {answer['p50_ms']} ms p99 {answer['p99_ms']} ms   "
            f"ingest p99 {result['ingest']['p99_ms']} ms   {result['delivered']} of {result['deliveries_due']} "
            f"delivered   errors {result['errors']}",
            flush=True,
        )
        for sample in result["error_samples"][:3]:
            print(f"    error: {sample}", flush=True)
        return result

    # -- profile
    def run_profile(self, server: Server, name: str, spec: dict) -> dict:
        """py-spy on the server's workers while `spec` runs; the profile summary printed and saved."""
        py_spy = common.VENV_BIN / "py-spy"
        if not py_spy.exists():
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install -e '.[bench]'")
        stamp = self.results["stamp"]
        folded = common.RESULTS / f"{stamp}-{name}.folded"
        duration = int(self.duration)
        log(f"profile: py-spy on the {self.args.workers} workers during {name}, {duration}s")
        process = common.start_child("loadgen.py", spec)
        time.sleep(spec["warmup"])
        subprocess.run(
            # --gil: only samples of a thread holding the GIL, i.e. Python's CPU time, not threads parked in waits.
            [str(py_spy), "record", "--pid", str(server.process.pid), "--subprocesses", "--gil", "--rate", "250"]
            + ["--duration", str(duration), "--format", "raw", "--output", str(folded), "--nonblocking"],
            check=True,
            capture_output=True,
        )
        raw = common.finish_child(process, timeout=spec["warmup"] + spec["duration"] + 120)
        report = summarise_profile(folded)
        print(report, flush=True)
        (common.RESULTS / f"{stamp}-{name}-profile.txt").write_text(report)
        return {"folded": str(folded), "errors": raw["errors"]}


def wait_for_holder(status_file: Path, count: int, *, max_seconds: float) -> float:
    """Wait (at most `max_seconds`) until the holder reports `count` connections in flight; the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < max_seconds and read_status(status_file).get("in_flight", 0) < count:
        time.sleep(0.5)
    return round(time.monotonic() - start, 1)


def settle(pid: int, *, max_seconds: float) -> float:
    """Wait (at most `max_seconds`) until the process uses under half a core for 2 s: the arrivals are taken in."""
    start = time.monotonic()
    while time.monotonic() - start < max_seconds:
        cpu0 = common.cpu_seconds([pid])
        time.sleep(2)
        if common.cpu_seconds([pid]) - cpu0 < 1.0:
            break
    return round(time.monotonic() - start, 1)


def _cpu_note(r: dict, cpu: dict) -> str:
    parts = []
    requests = r.get("answered_in_window", r.get("requests"))  # an open loop's: those the window's CPU answered
    if "server_cpu_s" in cpu and requests:
        per = 1000 * cpu["server_cpu_s"] / requests
        r["server_cpu_ms_per_request"] = round(per, 2)
        parts.append(f"server {per:.1f} ms CPU/req ({cpu['server_cores']} cores)")
    if "postgres_cpu_s" in cpu and requests:
        r["postgres_cpu_ms_per_request"] = round(1000 * cpu["postgres_cpu_s"] / requests, 2)
        parts.append(f"postgres {cpu['postgres_cores']} cores")
    parts.append(f"generator {'+'.join(str(g) for g in r.get('generator_cpu_cores', []))} cores")
    if r.get("connections_per_worker"):
        parts.append(f"connections/worker {'/'.join(str(c) for c in r['connections_per_worker'])}")
    parts.append(f"machine busy {cpu.get('machine_busy_fraction')}")
    return ", ".join(parts)


def _ms(value) -> str:
    return "      -" if value is None else f"{value:>7.1f}"


def read_status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# --- the database floor ---------------------------------------------------------------------------------------------


def db_floor(conninfo: str, captured: dict, client_bindings, *, warmup: float, duration: float, meter) -> dict:
    """The captured statements of a prepare (new: auth, BEGIN, lock, supersede, insert, COMMIT; reuse: no insert),
    with the binding, signature, new session id and timestamps replaced, from one thread per client."""
    import psycopg
    from django.utils import timezone

    def bind(params, mapping):
        bound = []
        for value in params or ():
            if isinstance(value, dt.datetime):
                bound.append(timezone.now())
                continue
            try:
                bound.append(mapping.get(value, value))
            except TypeError:  # unhashable (a JSON adapter): as captured
                bound.append(value)
        return bound

    def replay(conn, statements, mapping):
        index = 0
        while index < len(statements):
            sql, params, in_tx = statements[index]
            if not in_tx:
                conn.execute(sql, bind(params, mapping)).fetchall()
                index += 1
                continue
            with conn.transaction():
                while index < len(statements) and statements[index][2]:
                    sql, params, _ = statements[index]
                    cursor = conn.execute(sql, bind(params, mapping))
                    if cursor.description is not None:
                        cursor.fetchall()
                    index += 1

    start = time.perf_counter()
    t_start, t_end = start + warmup, start + warmup + duration
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(bindings):
        own: list[float] = []
        last = None
        with psycopg.connect(conninfo, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
            for k in range(1_000_000):
                if time.perf_counter() >= t_end:
                    break
                if last is not None and k % 4 == 3:
                    binding, signature = last
                    statements, mapping = captured["reuse"], {}
                else:
                    binding, signature = uuid.UUID(bindings[k % len(bindings)]), f"sha256:{uuid.uuid4().hex}"
                    statements, mapping = captured["new"], {captured["session_id"]: uuid.uuid4()}
                mapping.update({captured["binding"]: binding, captured["signature"]: signature})
                t0 = time.perf_counter()
                try:
                    replay(conn, statements, mapping)
                except Exception as exc:  # noqa: BLE001
                    with lock:
                        errors.append(repr(exc))
                    continue
                t1 = time.perf_counter()
                if t_start <= t1 <= t_end:
                    own.append((t1 - t0) * 1000)
                last = (binding, signature)
        with lock:
            latencies.extend(own)

    threads = [threading.Thread(target=client, args=(b,), daemon=True) for b in client_bindings]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, t_start - time.perf_counter()))
    meter.start()
    cpu0 = time.process_time()
    time.sleep(max(0.0, t_end - time.perf_counter()))
    cpu = meter.stop()
    generator = time.process_time() - cpu0
    for thread in threads:
        thread.join(timeout=60)
    return {
        "latencies_ms": latencies,
        "errors": len(errors),
        "error_samples": errors[:10],
        "statements_new": len(captured["logged_new"]),
        "statements_reuse": len(captured["logged_reuse"]),
        "generator_cpu_cores": [round(generator / duration, 2)],
        "cpu": cpu,
    }


# --- profile summary -------------------------------------------------------------------------------------------------


def summarise_profile(folded: Path, top: int = 30) -> str:
    """Inclusive and self share of samples per function, from py-spy's folded stacks."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        count = int(count)
        frames = stack.split(";")
        total += count
        seen = set()
        for frame in frames:
            name = _frame_name(frame)
            if name not in seen:
                inclusive[name] = inclusive.get(name, 0) + count
                seen.add(name)
        leaf = _frame_name(frames[-1])
        own[leaf] = own.get(leaf, 0) + count
    lines = [f"py-spy: {total} samples holding the GIL (Python CPU time), {folded.name}"]
    lines.append("  inclusive  function (file)")
    for name, count in sorted(inclusive.items(), key=lambda x: -x[1])[:top]:
        lines.append(f"  {100 * count / max(1, total):6.1f}%   {name}")
    lines.append("  self       function (file)")
    for name, count in sorted(own.items(), key=lambda x: -x[1])[:top]:
        lines.append(f"  {100 * count / max(1, total):6.1f}%   {name}")
    return "\n".join(lines)


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"; drop the line number.
    name, _, location = frame.partition(" (")
    location = location.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in location:
            location = location.split(marker, 1)[1]
    return f"{name} ({location})"


# --- main ------------------------------------------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    chosen = [s for s in SCENARIOS if not args.only or s in args.only.split(",")]
    nofile = common.raise_nofile(20_000)
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    bench = Bench(args)
    bench.results.update(
        stamp=stamp,
        quick=args.quick,
        config={
            "workers": args.workers,
            "clients": args.clients,
            "generators": args.generators,
            "warmup_s": bench.warmup,
            "duration_s": bench.duration,
            "idle_polls": args.idle_polls if "idle-polls" in chosen else 0,
            "server": "gunicorn acp.asgi:application -k acp.serving.worker.UvicornWorker, DATABASE_POOL=1, DEBUG=0",
            "nofile": nofile,
        },
        source=git_state(),
        machine={
            "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
            "python": platform.python_version(),
        },
    )
    t0 = time.monotonic()
    log(f"PostgreSQL: starting a throwaway cluster (open files limit {nofile})")
    bench.pg = Postgres().start()
    common.setup_django(bench.pg.url)
    log("data: migrate, a user, tokens, 65 bindings, 16 running sessions, idle daemons")
    bench.data = create_data(args.idle_polls if "idle-polls" in chosen else 0, bool(TIMELINE_SCENARIOS & set(chosen)))
    bench.captured = capture_prepare_sql(bench.data)
    bench.results["prepare_sql"] = {"new": bench.captured["logged_new"], "reuse": bench.captured["logged_reuse"]}
    from django.db import connections

    connections.close_all()
    random.seed(7)

    print(
        f"\nACP load benchmark{' (quick)' if args.quick else ''}: {os.cpu_count()} cores, main server "
        f"{args.workers} gunicorn/uvicorn workers, {args.clients} clients, {bench.warmup:g}s warm-up + "
        f"{bench.duration:g}s per scenario, load average at start {os.getloadavg()[0]:.1f}\n",
        flush=True,
    )
    server = None
    needs_server = {"prepare-spread", "prepare-hot", "get-floor", "control", "ingest", "delivery"} & set(chosen)
    needs_server = needs_server or args.profile
    if needs_server:
        log(f"server: gunicorn with {args.workers} uvicorn workers")
        server = Server(bench.pg.url, workers=args.workers).start()
        bench.warm(server)
    r = bench.results["scenarios"]
    if "prepare-spread" in chosen:
        bench.run_prepare(server, "prepare-spread", hot=False)
    if "prepare-hot" in chosen:
        bench.run_prepare(server, "prepare-hot", hot=True)
    if "get-floor" in chosen:
        bench.run_get(server)
    if "control" in chosen:
        bench.run_control(server)
    if "ingest" in chosen:
        bench.run_ingest(server)
    if "delivery" in chosen:
        bench.run_delivery(server)
    if "db-floor" in chosen:
        bench.run_db_floor()
    if args.profile:
        bench.results["profile"] = bench.run_profile(server, "prepare", bench.prepare_spec(server, hot=False))
        if "ingest" in chosen:
            bench.results["profile_ingest"] = bench.run_profile(server, "ingest", bench.ingest_spec(server))
    if server is not None:
        server.stop()
    if "idle-polls" in chosen:
        bench.run_idle_polls()
    if "idle-streams" in chosen:
        bench.run_idle_streams()
    if "ratelimit" in chosen:
        bench.run_ratelimit()

    verdict = targets(r)
    bench.results["targets"] = verdict
    bench.results["elapsed_s"] = round(time.monotonic() - t0, 1)
    path = common.RESULTS / f"{stamp}.json"
    path.write_text(json.dumps(bench.results, indent=2, default=str))
    print(f"\nresults: {path.relative_to(common.ROOT)} ({bench.results['elapsed_s']:.0f}s)", flush=True)
    return 0


def git_state() -> dict:
    def git(*args):
        result = subprocess.run(["git", *args], cwd=common.ROOT, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "modified_files": status.splitlines() if status else []}


def targets(r: dict) -> dict:
    out: dict = {}
    lines = []
    prepare = r.get("prepare-spread", {}).get("throughput_rps")
    floor4 = r.get("get-floor", {}).get("throughput_rps")
    floor5 = r.get("db-floor", {}).get("throughput_rps")
    if prepare and floor4:
        out["prepare_over_get_floor"] = round(prepare / floor4, 2)
        lines.append(f"prepare / framework floor (4) = {out['prepare_over_get_floor']:.2f}   target ≥ 0.80")
        out["prepare_over_get_floor_met"] = out["prepare_over_get_floor"] >= 0.8
    if prepare and floor5:
        out["prepare_over_db_floor"] = round(prepare / floor5, 2)
        lines.append(f"prepare / database floor (5)  = {out['prepare_over_db_floor']:.2f}")
    errors = {name: s.get("errors", 0) for name, s in r.items()}
    out["errors"] = errors
    out["zero_errors_met"] = not any(errors.values())
    lines.append(f"errors: {sum(errors.values())} in all   target 0")
    for what, key, without_row, with_row in (
        ("long-polls", "idle_polls", "prepare-spread 1 worker", "prepare-spread +idle polls"),
        ("streams", "idle_streams", "prepare-spread 1 worker (streams)", "prepare-spread +idle streams"),
    ):
        idle_ratio(out, lines, r, what, key, without_row, with_row)
    off, on = (r.get(f"prepare-spread ratelimit {mode}", {}).get("throughput_rps") for mode in ("off", "on"))
    if off and on:
        out["prepare_ratelimit_on_over_off"] = round(on / off, 2)
        out["ratelimit_met"] = out["prepare_ratelimit_on_over_off"] >= 0.9
        lines.append(
            f"prepare with rate limiting on / off = {on} / {off} req/s = {out['prepare_ratelimit_on_over_off']:.2f}"
            "   target ≥ 0.90"
        )
    ingest = r.get("ingest", {}).get("p99_ms")
    if ingest is not None:
        out["ingest_p99_ms"] = ingest
        out["ingest_met"] = ingest <= 100
        lines.append(f"ingest p99 = {ingest} ms   target ≤ 100 ms")
    delivered = r.get("delivery", {}).get("receive_minus_sent", {}).get("p99_ms")
    if "delivery" in r:
        out["delivery_p99_ms"] = delivered
        out["delivery_met"] = delivered is not None and delivered <= 50
        lines.append(f"delivery p99 (receive − sent) = {delivered} ms   target ≤ 50 ms")
    wake = r.get("control", {}).get("wake_up", {}).get("p99_ms")
    if wake is not None:
        out["wake_up_p99_ms"] = wake
        out["wake_up_met"] = wake <= 50
        lines.append(f"wake-up p99 = {wake} ms   target ≤ 50 ms")
    print("\n" + "\n".join(f"{line}   {_met(out, line)}" for line in lines), flush=True)
    return out


def idle_ratio(out: dict, lines: list, r: dict, what: str, key: str, without_row: str, with_row: str) -> None:
    """p99 of prepare-spread with the idle connections held over without them (one worker)."""
    without = r.get(without_row, {}).get("p99_ms")
    if with_row not in r or not without:
        return
    held = r[with_row].get("p99_ms")
    label = f"p99 with idle {what} / without"
    ratio = "p99_with_idle_over_without" if key == "idle_polls" else f"p99_with_{key}_over_without"  # as before
    if held is None:  # not one request completed while they were held
        out[ratio] = None
        out[f"{key}_met"] = False
        lines.append(f"{label} = (no request completed) / {without} ms   target ≤ 1.20")
        return
    out[ratio] = round(held / without, 2)
    out[f"{key}_met"] = out[ratio] <= 1.2
    lines.append(f"{label} = {held} / {without} ms = {out[ratio]:.2f}   target ≤ 1.20")


def _met(out: dict, line: str) -> str:
    key = next(
        (
            k
            for prefix, k in (
                ("prepare / framework", "prepare_over_get_floor_met"),
                ("errors", "zero_errors_met"),
                ("p99 with idle long-polls", "idle_polls_met"),
                ("p99 with idle streams", "idle_streams_met"),
                ("ingest p99", "ingest_met"),
                ("delivery p99", "delivery_met"),
                ("wake-up", "wake_up_met"),
                ("prepare with rate", "ratelimit_met"),
            )
            if line.startswith(prefix)
        ),
        None,
    )
    if key is None:
        return ""
    return "MET" if out.get(key) else "NOT MET"


if __name__ == "__main__":
    sys.exit(main())
