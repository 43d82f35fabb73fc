"""The machine-channel benchmark: `.venv/bin/python bench/channel.py [--quick] [--daemons N] [--profile]`.

One server process (gunicorn + ONE uvicorn worker, DATABASE_POOL=1, DEBUG=0) on a throwaway PostgreSQL, on
127.0.0.1; the load in separate processes (bench/channelgen.py holds the channels on raw sockets, bench/loadgen.py
runs the prepares). See README, "Benchmarks" — "The machine channel". In order:

  prepare-spread 1 worker   prepare-spread (as bench/run.py's) on the single worker, no channel open
  launch poll wait=0        `GET /api/v1/machines/{id}/launches?wait=0` round-robin over the machines: the worker's
                            CPU per long-poll take-in without the wait, 8 clients at once
  one at a time             a channel's connect (+ close), a poll's take-in (wait=0) and a whole long-poll as an
                            idle daemon makes it (wait=1, answered at its deadline), each on a new connection, none
                            overlapping, in alternating blocks: the worker's CPU for each (the target: a connect at
                            most a third of a long-poll)
  idle channels             N machines open `GET /api/v1/machines/{id}/stream` (own device token each), paced over
                            the ramp; worker CPU per connect, RSS per channel, threads and database connections
                            before/after
  prepare-spread +channels  prepare-spread again, in windows with the N channels held and without them in turn
  / without (paired)        (all closed, then reopened, between): each side's p50/p99 over all its windows
  command delivery          with the N held: 4 more machines with a running session each hold a channel; control
                            commands are created with a user token and timed until their `event: command` arrives
                            on the right channel (which acks it)
  reconnect storm alone     every channel closed and reopened at a random moment of a window: CPU per reconnect
  reconnect storm +prepare  the same storm while prepare-spread runs: errors, prepare p99
  --profile                 py-spy on the worker during the storm alone, and during a further run of the wait=0 polls

Writes bench/results/channel-<timestamp>.json; prints the targets MET / NOT MET. Everything stops at exit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import run  # noqa: E402
from common import CpuMeter, Postgres, Server, log, summarise  # noqa: E402

REAL_MACHINES = 4
THREADS = ("event loop", "other threads")  # common.thread_cpu_seconds's split of the worker
ONE_AT_A_TIME = 3000  # machines whose channel, and whose launch poll, the one-at-a-time step takes in
ONE_AT_A_TIME_BLOCKS = 10  # connects and polls alternate in blocks: a change in the machine's speed moves both
# An idle daemon's long-poll answered at its deadline: the unit of a poll (README, "Why ASGI": taking it in,
# subscribing, the answer at the deadline). 1 s instead of a daemon's 30: the work is the same (no timed re-check
# falls within either, ACP_LONG_POLL_RECHECK being 60 s), only the wait is shorter.
LONG_POLL_WAIT = 1
LONG_POLL_GAP = 0.02  # seconds between two long-polls' starts: each one's work is done alone, their waits overlap
# Seconds after a storm's window within which every channel must be back (its daemons paced by 503 + Retry-After
# meanwhile); one not back by then is an error. The prepares beside a storm run until it is back.
STORM_DRAIN = 60.0
ONE_AT_A_TIME_KINDS = {
    "connect": "channel connect",
    "poll": "poll take-in (wait=0)",
    "long poll": f"long-poll (wait={LONG_POLL_WAIT})",
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 daemons and short windows (about 3 minutes)")
    parser.add_argument("--daemons", type=int, default=None, help="idle channels held (10,000; --quick 1,000)")
    parser.add_argument("--ramp", type=float, default=None, help="seconds over which they are opened (120; quick 10)")
    parser.add_argument("--storm", type=float, default=None, help="the reconnect storm's window in s (60; quick 15)")
    parser.add_argument("--clients", type=int, default=32, help="prepare-spread's concurrent clients (32)")
    parser.add_argument("--poll-clients", type=int, default=8, help="concurrent clients of the wait=0 polls (8)")
    parser.add_argument("--profile", action="store_true", help="py-spy on the worker during a storm and the polls")
    parser.add_argument(
        "--heartbeat", type=float, default=None, help="the server's ACP_STREAM_HEARTBEAT (default: its own, 15 s)"
    )
    parser.add_argument(
        "--paired-rounds", type=int, default=None, help="prepare windows with the channels, and without (3; quick 2)"
    )
    args = parser.parse_args()
    args.paired_rounds = args.paired_rounds or (2 if args.quick else 3)
    args.reopen_ramp = 5.0 if args.quick else 30.0
    args.daemons = args.daemons or (1000 if args.quick else 10_000)
    args.ramp = args.ramp or (10.0 if args.quick else 120.0)
    args.storm = args.storm or (15.0 if args.quick else 60.0)
    args.generators = 1
    return args


def stream_paths(machines: list) -> list:
    """run.create_data's idle daemons are [launches path, token]: the same machines' channel."""
    return [[path.removesuffix("/launches") + "/stream", token] for path, token in machines]


def create_real_machines(user, count: int) -> list[dict]:
    """`count` machines with a device token and a running session each: the daemons that receive the commands."""
    from django.utils import timezone

    from acp.models import Device, Environment
    from acp.services import token_create
    from commands.services import local_session_create, thread_create

    environment = Environment.objects.create(user=user, name="channel bench computer")
    machines = []
    for i in range(count):
        device = Device.objects.create(
            user=user, name=f"real daemon {i}", platform="linux", last_seen_at=timezone.now()
        )
        token = token_create(user=user, device=device, name="real daemon").raw
        thread = thread_create(user=user, environment=environment, title=f"channel bench thread {i}")
        session = local_session_create(user=user, thread=thread, device=device, status="running")
        machines.append(
            {
                "path": f"/api/v1/machines/{device.pk}/stream",
                "token": token,
                "sessions": [[str(thread.pk), str(session.pk)]],
            }
        )
    return machines


def process_limits(pid: int) -> int | None:
    """The soft open-files limit of a process, from /proc/PID/limits."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
    except (OSError, ValueError, IndexError):
        pass
    return None


class ChannelBench:
    def __init__(self, args, pg: Postgres, data: dict):
        self.args = args
        self.pg = pg
        self.data = data
        self.bench = run.Bench(SimpleNamespace(quick=args.quick, clients=args.clients, generators=1))
        self.bench.pg, self.bench.data = pg, data
        self.results = self.bench.results
        self.rows = self.results["scenarios"]
        self.tmp = Path(tempfile.mkdtemp(prefix="acp-bench-channel."))
        common.at_exit(lambda: shutil.rmtree(self.tmp, ignore_errors=True))
        self.holder = None
        self.orders = 0

    @property
    def warmup(self) -> float:
        return self.bench.warmup

    @property
    def duration(self) -> float:
        return self.bench.duration

    def database_backends(self) -> int:
        sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'acp' AND backend_type = 'client backend'"
        return int(self.pg.psql(sql, "-At").stdout.strip()) - 1  # not psql's own

    def worker_state(self) -> dict:
        return {
            "rss_mb": round(common.rss_mb(self.worker), 1),
            "threads": common.thread_count(self.worker),
            "database_connections": self.database_backends(),
            "connections_to_server": sum(common.connections_per_process(self.server.port, [self.worker]).values()),
        }

    # -- the server
    def start_server(self) -> None:
        env = {
            # Longer than the run: a channel that ends meanwhile is a drop, not the age limit.
            "ACP_CHANNEL_MAX_SECONDS": "7200",
        }
        if self.args.heartbeat is not None:
            env["ACP_STREAM_HEARTBEAT"] = str(self.args.heartbeat)
        log("server: gunicorn with ONE uvicorn worker")
        self.server = Server(self.pg.url, workers=1, env=env).start()
        self.worker = self.server.worker_pids()[0]
        nofile = process_limits(self.worker)
        self.results["config"]["worker_nofile"] = nofile
        if nofile is not None and nofile < self.args.daemons + 1000:
            raise SystemExit(f"the worker may open only {nofile} files, fewer than {self.args.daemons} channels need")
        self.bench.warm(self.server)

    # -- prepare
    def prepare(self, name: str) -> dict:
        return self.bench.run_prepare(self.server, name, hot=False)

    # -- one connect, one poll, one long-poll at a time
    def one_at_a_time(self) -> dict:
        count = min(ONE_AT_A_TIME, len(self.data["channels"]))
        log(
            f"one at a time: {count} channel connects (each closed once connected), {count} polls (wait=0) and "
            f"{count} long-polls (wait={LONG_POLL_WAIT}, one started every {LONG_POLL_GAP:g} s), alternating in "
            f"{ONE_AT_A_TIME_BLOCKS} blocks"
        )
        spec = {
            "kind": "one_at_a_time",
            "base_url": self.server.url,
            "worker_pid": self.worker,
            "channels": self.data["channels"][:count],
            "polls": self.data["idle_polls"][:count],
            "warm": 100,
            "blocks": ONE_AT_A_TIME_BLOCKS,
            "settle_s": 0.5,
            "long_poll_wait": LONG_POLL_WAIT,
            "long_poll_gap_s": LONG_POLL_GAP,
        }
        row = common.run_child("channelgen.py", spec, timeout=900)
        row["errors"] = sum(row[name]["errors"] for name in ONE_AT_A_TIME_KINDS)
        self.rows["one at a time"] = row
        for name, label in ONE_AT_A_TIME_KINDS.items():
            cpu = row[name]["worker_cpu_ms"]
            print(
                f"{label:<26} {row[name]['count']} in {row[name]['elapsed_s']}s, errors "
                f"{row[name]['errors']}   | worker {sum(cpu.values()):.2f} ms CPU each: event loop "
                f"{cpu[THREADS[0]]:.2f}, other threads {cpu[THREADS[1]]:.2f}",
                flush=True,
            )
        return row

    # -- launch polls, wait=0
    def launch_polls(self, name: str = "launch poll wait=0") -> dict:
        clients = self.args.poll_clients
        log(
            f"{name}: GET …/launches?wait=0 round-robin over {len(self.data['idle_polls'])} machines, {clients} clients"
        )
        spec = self.bench.http_spec(self.server, "polls", clients=clients, polls=self.data["idle_polls"])
        meter = CpuMeter({"worker": lambda: [self.worker], "postgres": self.pg.pids})
        process = common.start_child("channelgen.py", spec)
        time.sleep(spec["warmup"])
        meter.start()
        time.sleep(spec["duration"])
        cpu = meter.stop()
        raw = common.finish_child(process, timeout=spec["warmup"] + spec["duration"] + 120)
        latencies = raw.pop("latencies_ms")
        row = {
            "throughput_rps": round(len(latencies) / self.duration, 1),
            "requests": len(latencies),
            **summarise(latencies),
            "errors": raw["errors"],
            "error_samples": raw["error_samples"],
            "statuses": raw["statuses"],
            "cpu": cpu,
            "worker_cpu_ms_per_poll": round(1000 * cpu["worker_cpu_s"] / max(1, len(latencies)), 2),
            "clients": clients,
        }
        self.rows[name] = row
        print(
            f"{name:<26} {row['throughput_rps']:>7.1f} req/s   p50 {row['p50_ms']} ms   p99 {row['p99_ms']} ms   "
            f"errors {row['errors']}   | worker {row['worker_cpu_ms_per_poll']} ms CPU/poll ({cpu['worker_cores']} "
            f"cores), postgres {cpu['postgres_cores']} cores",
            flush=True,
        )
        return row

    # -- idle channels
    def open_channels(self) -> dict:
        count, ramp = len(self.data["channels"]), self.args.ramp
        self.stop_file, self.status_file = self.tmp / "stop", self.tmp / "status"
        self.order_file = self.tmp / "order"
        before = self.worker_state()
        log(f"idle channels: opening {count} (one device token each) over {ramp:g}s; worker before {before}")
        cpu0, t_open = common.cpu_seconds([self.worker]), time.monotonic()
        self.holder = common.start_child(
            "channelgen.py",
            {
                "kind": "hold",
                "base_url": self.server.url,
                "machines": self.data["channels"],
                "ramp_s": ramp,
                "stop_file": str(self.stop_file),
                "status_file": str(self.status_file),
                "order_file": str(self.order_file),
                "max_seconds": 3600,
            },
        )
        common.at_exit(lambda: self.stop_file.touch() if self.tmp.exists() else None)
        try:
            self.wait_status(lambda s: s.get("connected", 0) >= count, ramp + 300)
        except TimeoutError as exc:  # reported as it stands (connected < channels), and the run goes on
            log(f"idle channels: {exc}")
        settled = run.settle(self.worker, max_seconds=30)
        cpu = common.cpu_seconds([self.worker]) - cpu0
        after = self.worker_state()
        status = run.read_status(self.status_file)
        connects = status.get("connects", 0)
        up_after_ramp_s = time.monotonic() - t_open - ramp
        row = {
            "channels": count,
            "ramp_s": ramp,
            "settle_s": settled,
            "connected": status.get("connected"),
            "connect_errors": status.get("connect_errors"),
            "refused": status.get("refused"),
            "errors": status.get("connect_errors", 0) + status.get("dropped", 0) + status.get("replaced", 0),
            "worker_before": before,
            "worker_after": after,
            "worker_rss_kb_per_channel": round(1024 * (after["rss_mb"] - before["rss_mb"]) / max(1, count), 1),
            # From the first connect to the settled state: connects and the keepalives of those already up.
            "worker_cpu_ms_per_connect_ramp": round(1000 * cpu / max(1, connects), 2),
            "worker_cpu_s_ramp": round(cpu, 2),
            "up_after_ramp_s": round(up_after_ramp_s, 1),
            "holder": status,
        }
        self.rows["idle channels"] = row
        print(
            f"{'idle channels':<26} {row['connected']}/{count} connected, errors {row['errors']}   | worker RSS "
            f"{before['rss_mb']} → {after['rss_mb']} MB ({row['worker_rss_kb_per_channel']} KB/channel), threads "
            f"{before['threads']} → {after['threads']}, database connections {before['database_connections']} → "
            f"{after['database_connections']}, {row['worker_cpu_ms_per_connect_ramp']} ms worker CPU/connect (ramp)",
            flush=True,
        )
        return row

    def idle_cost(self, seconds: float) -> dict:
        """The worker's CPU with only the channels held (keepalives, presence): the baseline of the storm's share."""
        cpu0 = common.cpu_seconds([self.worker])
        time.sleep(seconds)
        cores = (common.cpu_seconds([self.worker]) - cpu0) / seconds
        row = self.rows["idle channels"]
        row["worker_cores_idle"] = round(cores, 3)
        # The ramp's CPU less what the channels already up cost meanwhile (half of them on average during the ramp,
        # all of them while it settled): what the connects themselves cost.
        held_s = row["ramp_s"] / 2 + row["up_after_ramp_s"]
        net = row["worker_cpu_s_ramp"] - cores * held_s
        row["worker_cpu_ms_per_connect_ramp_net"] = round(1000 * net / max(1, row["holder"].get("connects", 0)), 2)
        log(f"idle channels: a connect cost the worker {row['worker_cpu_ms_per_connect_ramp_net']} ms net of that")
        log(f"idle channels: the worker uses {cores:.3f} cores holding them ({seconds:g}s)")
        return cores

    def wait_status(self, condition, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        status: dict = {}
        while time.monotonic() < deadline:
            if self.holder.poll() is not None:
                raise RuntimeError(f"the channel holder exited ({self.holder.returncode})")
            status = run.read_status(self.status_file)
            if status and condition(status):
                return status
            time.sleep(0.5)
        raise TimeoutError(f"the channel holder did not get there within {timeout:.0f}s: {status}")

    # -- prepares with the channels held and without them, in turn
    def paired_prepares(self) -> dict:
        """prepare-spread in windows with the N channels held and without them, in turn (all closed, then reopened,
        between), `rounds` of each: a drift of the machine's speed moves both sides alike. Each side's p99 is over
        all its windows' requests (one window's p99 swings between runs more than the channels move it)."""
        rounds, count = self.args.paired_rounds, len(self.data["channels"])
        log(
            f"prepares with and without the channels: {rounds} windows of each, in turn; between them the "
            f"{count} channels are closed, or reopened over {self.args.reopen_ramp:g}s"
        )
        before = run.read_status(self.status_file)
        latencies: dict[str, list[float]] = {"with": [], "without": []}
        windows: dict[str, list[dict]] = {"with": [], "without": []}
        for number in range(1, rounds + 1):
            for side in ("with", "without"):
                name = f"prepare-spread {side} channels #{number}"
                raw = self.bench.generators(self.server, self.bench.prepare_spec(self.server, hot=False))
                latencies[side] += raw["latencies_ms"]
                windows[side].append(self.window_row(name, raw))
                if side == "with":
                    self.close_channels()
                else:
                    self.reopen_channels()
        after = run.read_status(self.status_file)
        errors = {key: after.get(key, 0) - before.get(key, 0) for key in ("connect_errors", "dropped", "replaced")}
        for side, name in (("with", "prepare-spread +channels"), ("without", "prepare-spread without (paired)")):
            row = {
                "windows": len(windows[side]),
                "requests": len(latencies[side]),
                **summarise(latencies[side]),
                "window_p99_ms": [window["p99_ms"] for window in windows[side]],
                "window_p50_ms": [window["p50_ms"] for window in windows[side]],
                "errors": sum(window["errors"] for window in windows[side]),
                "server_cpu_ms_per_request": [window["server_cpu_ms_per_request"] for window in windows[side]],
            }
            self.rows[name] = row
            print(
                f"{name:<32} {row['requests']} requests in {row['windows']} windows   p50 {row['p50_ms']} ms   p99 "
                f"{row['p99_ms']} ms (the windows' p99 {row['window_p99_ms']})   errors {row['errors']}",
                flush=True,
            )
        self.rows["prepare-spread +channels"]["channel_errors_between"] = errors
        self.rows["prepare-spread +channels"]["errors"] += sum(errors.values())
        return self.rows["prepare-spread +channels"]

    def window_row(self, name: str, raw: dict) -> dict:
        row = {"requests": len(raw["latencies_ms"]), **summarise(raw["latencies_ms"]), "errors": raw["errors"]}
        row.update(
            throughput_rps=round(row["requests"] / self.duration, 1),
            cpu=raw["cpu"],
            generator_cpu_cores=raw["generator_cpu_cores"],
        )
        self.bench.print_row(name, row)  # which adds server_cpu_ms_per_request
        return row

    def close_channels(self) -> None:
        self.order("close")
        self.wait_status(lambda s: s.get("connected", 1) == 0, 120)
        run.settle(self.worker, max_seconds=30)

    def reopen_channels(self) -> None:
        count = len(self.data["channels"])
        self.order("open", ramp_s=self.args.reopen_ramp)
        self.wait_status(lambda s: s.get("connected", 0) >= count, self.args.reopen_ramp + 300)
        run.settle(self.worker, max_seconds=30)

    # -- commands
    def command_delivery(self) -> dict:
        machines = self.data["real_machines"]
        log(f"command delivery: {len(machines)} machines with a session each, create → event: command → ack")
        spec = self.bench.http_spec(self.server, "commands", machines=machines, max_rounds=10_000, gap_s=[0.2, 0.4])
        meter = CpuMeter({"worker": lambda: [self.worker], "postgres": self.pg.pids})
        process = common.start_child("channelgen.py", spec)
        time.sleep(spec["warmup"] + 1)
        meter.start()
        time.sleep(spec["duration"])
        cpu = meter.stop()
        raw = common.finish_child(process, timeout=spec["warmup"] + spec["duration"] + 120)
        row = {
            "commands": len(raw["from_answer_ms"]),
            "from_answer": summarise(raw.pop("from_answer_ms")),
            "from_send": summarise(raw.pop("from_send_ms")),
            "create": summarise(raw.pop("create_ms")),
            "wrong_channel": raw["wrong_channel"],
            "errors": raw["errors"] + raw["wrong_channel"],
            "error_samples": raw["error_samples"],
            "statuses": raw["statuses"],
            "generator_cpu_cores": round(raw["generator_cpu_s"] / self.duration, 2),
            "cpu": cpu,
            "connected_meanwhile": run.read_status(self.status_file).get("connected"),
        }
        self.rows["command delivery"] = row
        print(
            f"{'command delivery':<26} {row['commands']} commands   create→event p50 {row['from_send']['p50_ms']} "
            f"p99 {row['from_send']['p99_ms']} ms (from the create's answer p50 {row['from_answer']['p50_ms']} p99 "
            f"{row['from_answer']['p99_ms']} ms), create p99 {row['create']['p99_ms']} ms   errors {row['errors']}"
            f"   | {row['connected_meanwhile']} channels held",
            flush=True,
        )
        for sample in row["error_samples"][:3]:
            print(f"    error: {sample}", flush=True)
        return row

    # -- storms
    def order(self, kind: str, **fields) -> int:
        """Give the channel holder an order (bench/channelgen.py `hold`); returns its id."""
        self.orders += 1
        part = self.order_file.with_suffix(".part")
        part.write_text(json.dumps({"id": self.orders, "kind": kind, **fields}))
        part.replace(self.order_file)
        return self.orders

    def storm(self, *, during=None) -> dict:
        """Ask the holder to close and reopen every channel over the window; wait (bounded) until all are back."""
        before = run.read_status(self.status_file)
        window = self.args.storm
        storm_id = self.order("storm", window_s=window, seed=self.orders + 1, drain_s=STORM_DRAIN)
        cpu0, t0 = common.cpu_seconds([self.worker]), time.monotonic()
        by_thread0 = common.thread_cpu_seconds(self.worker)
        if during is not None:
            during()
        try:
            status = self.wait_status(lambda s: s.get("storm_done") == storm_id, window + STORM_DRAIN + 60)
        except TimeoutError as exc:
            log(f"storm {storm_id}: {exc}")
            status = run.read_status(self.status_file)
        elapsed = time.monotonic() - t0
        cpu = common.cpu_seconds([self.worker]) - cpu0
        by_thread = {name: round(s - by_thread0[name], 2) for name, s in common.thread_cpu_seconds(self.worker).items()}
        reconnects = status["storm_reconnects"] - before.get("storm_reconnects", 0)
        storm_errors = status["connect_errors"] - before.get("connect_errors", 0)
        # Counted when the drain ended (the holder's figure): one back a moment later is still late. A holder that
        # never said the storm was done is read as it stands.
        done = status.get("storm_done") == storm_id
        not_back = status["storm_not_back"] if done else len(self.data["channels"]) - status["connected"]
        dropped = status["dropped"] - before.get("dropped", 0)
        replaced = status["replaced"] - before.get("replaced", 0)
        return {
            "window_s": window,
            "elapsed_s": round(elapsed, 1),
            "reconnects": reconnects,
            "storm_errors": storm_errors,
            "not_back": not_back,
            "error_samples": status.get("error_samples", [])[-5:],
            "dropped": dropped,
            "replaced": replaced,
            "errors": storm_errors + dropped + replaced + max(0, not_back),
            "connected_after": status["connected"],
            "all_back_s": status.get("storm_back_s"),
            "refused": _counted_since(before.get("refused") or {}, status.get("refused") or {}),
            "worker_cpu_s": round(cpu, 2),
            "worker_cpu_s_by_thread": by_thread,
            "worker_after": self.worker_state(),
            "holder": status,
        }

    def storm_alone(self, idle_cores: float) -> dict:
        log(
            f"reconnect storm alone: {len(self.data['channels'])} channels closed and reopened "
            f"over {self.args.storm:g}s"
        )
        row = self.storm()
        own = row["worker_cpu_s"] - idle_cores * row["elapsed_s"]
        row["worker_cpu_ms_per_reconnect"] = round(1000 * own / max(1, row["reconnects"]), 2)
        self.rows["reconnect storm alone"] = row
        loop, others = (1000 * row["worker_cpu_s_by_thread"][name] / max(1, row["reconnects"]) for name in THREADS)
        print(
            f"{'reconnect storm alone':<26} {row['reconnects']} reconnects, {back(row)}, errors "
            f"{row['errors']}   | {row['worker_cpu_ms_per_reconnect']} ms worker CPU/reconnect (close + open, the "
            f"idle holding's {idle_cores:.3f} cores deducted; before that: event loop {loop:.2f}, other threads "
            f"{others:.2f})",
            flush=True,
        )
        return row

    def storm_with_prepare(self) -> dict:
        """The storm while prepare-spread runs, from the storm's start until every channel is back (the prepares'
        window is as long as the longest storm allowed; those answered after the storm's end are left out)."""
        window = self.args.storm
        log(f"reconnect storm +prepare: prepare-spread from the {window:g}s storm's start until every channel is back")
        spec = self.bench.prepare_spec(self.server, hot=False)
        spec.update(duration=window + STORM_DRAIN, timeline=True)
        meter = CpuMeter(self.bench.cpu_groups(self.server))
        process = common.start_child("loadgen.py", spec)
        time.sleep(spec["warmup"])
        meter.start()
        storm_row = self.storm()
        cpu = meter.stop()
        raw = common.finish_child(process, timeout=spec["warmup"] + spec["duration"] + 120)
        during = storm_row["all_back_s"] or storm_row["elapsed_s"]
        answered = raw.pop("answered_s")
        raw["latencies_ms"] = [ms for ms, t in zip(raw["latencies_ms"], answered, strict=True) if t <= during]
        raw.update(cpu=cpu, generator_cpu_cores=[round(raw["generator_cpu_s"] / spec["duration"], 2)])
        for key in ("completed", "window_s", "generator_cpu_s"):
            raw.pop(key, None)
        self.bench.record("prepare-spread +storm", raw, window=during)
        # No CPU per reconnect here: the worker's CPU minus the prepares' share at their no-channel cost came out
        # anywhere from 3.8 ms to below zero; the storm alone measures it.
        self.rows["reconnect storm +prepare"] = storm_row
        print(
            f"{'reconnect storm +prepare':<26} {storm_row['reconnects']} reconnects, {back(storm_row)}, "
            f"errors {storm_row['errors']}   | the worker {storm_row['worker_cpu_s'] / storm_row['elapsed_s']:.2f} "
            "cores with the prepares",
            flush=True,
        )
        return storm_row

    # -- profile
    def profile(self, name: str, action) -> dict:
        py_spy = common.VENV_BIN / "py-spy"
        if not py_spy.exists():
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install -e '.[bench]'")
        folded = common.RESULTS / f"channel-{self.results['stamp']}-{name}.folded"
        log(f"profile: py-spy on the worker during {name}")
        recorder = subprocess.Popen(
            # --gil: only samples of a thread holding the GIL, i.e. Python's CPU time, not threads parked in waits.
            [str(py_spy), "record", "--pid", str(self.worker), "--gil", "--rate", "250", "--format", "raw"]
            + ["--output", str(folded), "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        common.at_exit(lambda: recorder.poll() is None and recorder.terminate())
        time.sleep(1.0)
        try:
            action()
        finally:
            recorder.send_signal(2)  # SIGINT: py-spy writes what it recorded
            recorder.wait(timeout=60)
        report = run.summarise_profile(folded) + "\n" + project_summary(folded)
        print(report, flush=True)
        (common.RESULTS / f"channel-{self.results['stamp']}-{name}-profile.txt").write_text(report)
        return {"folded": str(folded), "summary": report}

    def stop_channels(self) -> dict:
        self.stop_file.touch()
        try:
            final = common.finish_child(self.holder, timeout=120)
        except RuntimeError as exc:  # the figures are in; a holder that does not stop is killed
            log(f"the channel holder: {exc}")
            return {}
        latency = {phase: summarise(values) for phase, values in final.pop("connect_ms").items() if values}
        self.results["connect_latency"] = latency
        print(f"connect → ': connected' latency (client side): {latency}", flush=True)
        return final


PROJECT_PACKAGES = ("acp/", "sessions/", "commands/", "bindings/")


def _counted_since(before: dict, now: dict) -> dict:
    """The holder's counts (refusals by status) are for the whole run: a storm's are those since it began."""
    return {name: count - before.get(name, 0) for name, count in now.items() if count > before.get(name, 0)}


def back(storm: dict) -> str:
    if storm["all_back_s"] is None:
        return f"{storm['not_back']} not back {STORM_DRAIN:g}s after the window"
    return f"all back after {storm['all_back_s']}s"


def project_summary(folded: Path, top: int = 25) -> str:
    """Inclusive share of the samples per function of ACP's own code (the framework frames above them left out):
    where a connect's CPU goes, in the project's terms."""
    inclusive: dict[str, int] = {}
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        names = {run._frame_name(frame) for frame in stack.split(";")}
        for name in names:
            location = name.rpartition(" (")[2]
            if any(location.startswith(p) or f"/{p}" in location for p in PROJECT_PACKAGES):
                inclusive[name] = inclusive.get(name, 0) + int(count)
    lines = ["  ACP's own functions, inclusive"]
    for name, count in sorted(inclusive.items(), key=lambda x: -x[1])[:top]:
        lines.append(f"  {100 * count / max(1, total):6.1f}%   {name}")
    return "\n".join(lines)


def targets(rows: dict) -> dict:
    out: dict = {}
    lines: list[tuple[str, bool | None]] = []
    # Without the channels: the paired windows' (taken in turn with those with the channels), else the first one.
    paired = rows.get("prepare-spread without (paired)", {})
    without = paired.get("p99_ms") or rows.get("prepare-spread 1 worker", {}).get("p99_ms")
    for name, key, limit in (("prepare-spread +channels", "idle", 1.2), ("prepare-spread +storm", "storm", 2.0)):
        with_p99 = rows.get(name, {}).get("p99_ms")
        if without and with_p99:
            ratio = round(with_p99 / without, 2)
            out[f"p99_{key}_over_without"] = ratio
            windows = f" (each side over its {paired['windows']} windows in turn)" if key == "idle" and paired else ""
            lines.append(
                (
                    f"prepare p99 {name.split('+')[1]} / without = {with_p99} / {without} ms = {ratio:.2f}{windows}"
                    f"   target ≤ {limit:.2f}",
                    ratio <= limit,
                )
            )
    idle = rows.get("idle channels", {})
    if idle:
        kb = idle["worker_rss_kb_per_channel"]
        lines.append((f"worker RSS per idle channel = {kb} KB   target ≤ 30 KB", kb <= 30))
        threads = [idle["worker_before"]["threads"], idle["worker_after"]["threads"]]
        threads += [
            rows[n]["worker_after"]["threads"]
            for n in ("reconnect storm alone", "reconnect storm +prepare")
            if n in rows
        ]
        lines.append(
            (
                f"worker threads before / with the channels / after the storms = "
                f"{' / '.join(str(t) for t in threads)}   target unchanged",
                len(set(threads)) == 1,
            )
        )
        db = (idle["worker_before"]["database_connections"], idle["worker_after"]["database_connections"])
        lines.append(
            (
                f"database connections before / with the channels = {db[0]} / {db[1]}   (an idle channel holds none)",
                db[1] <= max(db[0], 20),
            )
        )
        lines.append((f"idle channels connected = {idle['connected']} / {idle['channels']}", None))
    delivery = rows.get("command delivery", {})
    if delivery:
        p99 = delivery["from_send"]["p99_ms"]
        lines.append(
            (
                f"command create → event p99 = {p99} ms (from the create's answer "
                f"{delivery['from_answer']['p99_ms']} ms)   target ≤ 50 ms",
                p99 is not None and p99 <= 50,
            )
        )
    one = rows.get("one at a time")
    long_poll = None
    if one:
        connect, poll, long_poll = (sum(one[name]["worker_cpu_ms"].values()) for name in ONE_AT_A_TIME_KINDS)
        lines.append(
            (
                f"one at a time, each on a new connection: worker CPU per connect (+ close) = {connect:.2f} ms; per "
                f"long-poll (wait={LONG_POLL_WAIT}, answered at its deadline) {long_poll:.2f} ms; ratio "
                f"{connect / long_poll:.2f}   target ≤ 0.33",
                connect / long_poll <= 1 / 3,
            )
        )
        lines.append(
            (f"   … per poll's take-in alone (wait=0) {poll:.2f} ms; ratio {connect / poll:.2f}   (reported)", None)
        )
    per = rows.get("reconnect storm alone", {}).get("worker_cpu_ms_per_reconnect")
    polls = rows.get("launch poll wait=0", {})
    if per is not None and polls.get("worker_cpu_ms_per_poll"):
        take_in = polls["worker_cpu_ms_per_poll"]
        text = (
            f"reconnect storm alone: worker CPU per reconnect = {per} ms; per launch poll (wait=0, "
            f"{polls.get('clients', '?')} clients) {take_in} ms, ratio {per / take_in:.2f}"
        )
        if long_poll:
            text += f"; per long-poll one at a time {long_poll:.2f} ms, ratio {per / long_poll:.2f}"
        lines.append((f"{text}   (reported)", None))
    errors = {name: row.get("errors", 0) for name, row in rows.items()}
    out["errors"] = errors
    lines.append((f"errors: {sum(errors.values())} in all {errors}   target 0", not any(errors.values())))
    out["lines"] = [(text, met) for text, met in lines]
    print(
        "\n" + "\n".join(f"{text}   {'' if met is None else 'MET' if met else 'NOT MET'}" for text, met in lines),
        flush=True,
    )
    return out


def main() -> int:
    args = parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = common.raise_nofile(hard if hard != resource.RLIM_INFINITY else 1 << 20)
    if nofile < args.daemons + 2000:
        raise SystemExit(f"open files limit {nofile}: too low for {args.daemons} channels (ulimit -Hn)")
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    t0 = time.monotonic()
    log(f"PostgreSQL: starting a throwaway cluster (open files limit {nofile})")
    pg = Postgres().start()
    common.setup_django(pg.url)
    log(f"data: migrate, a user, 65 bindings, {args.daemons} idle machines, {REAL_MACHINES} machines with a session")
    data = run.create_data(args.daemons, False)
    data["channels"] = stream_paths(data["idle_polls"])
    data["real_machines"] = create_real_machines(data["user"], REAL_MACHINES)
    from django.db import connections

    connections.close_all()
    random.seed(7)
    cb = ChannelBench(args, pg, data)
    cb.results.update(
        stamp=stamp,
        quick=args.quick,
        config={
            "daemons": args.daemons,
            "ramp_s": args.ramp,
            "storm_s": args.storm,
            "clients": args.clients,
            "poll_clients": args.poll_clients,
            "stream_heartbeat_s": args.heartbeat or "the server's default (15)",
            "warmup_s": cb.warmup,
            "duration_s": cb.duration,
            "server": "gunicorn acp.asgi:application -k acp.serving.worker.UvicornWorker --workers 1, DATABASE_POOL=1",
            "nofile": nofile,
        },
        source=run.git_state(),
        machine={"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(), "python": platform.python_version()},
    )
    print(
        f"\nACP machine-channel benchmark{' (quick)' if args.quick else ''}: {os.cpu_count()} cores, ONE worker, "
        f"{args.daemons} channels over {args.ramp:g}s, storm {args.storm:g}s, {args.clients} prepare clients, "
        f"{cb.warmup:g}s warm-up + {cb.duration:g}s per window, load average at start {os.getloadavg()[0]:.1f}\n",
        flush=True,
    )
    path = common.RESULTS / f"channel-{stamp}.json"

    def save():  # after every step: a run cut short keeps what it measured
        path.write_text(json.dumps(cb.results, indent=2, default=str))

    def storm_alone():
        # With --profile, py-spy records the worker through it: a connect-only storm (its sampling costs the worker
        # little: --nonblocking, it does not stop the process).
        run_it = lambda: cb.storm_alone(cb.rows["idle channels"]["worker_cores_idle"])  # noqa: E731
        if args.profile:
            cb.results.setdefault("profile", {})["storm"] = cb.profile("storm", run_it)
        else:
            run_it()

    cb.start_server()
    steps = [
        lambda: cb.prepare("prepare-spread 1 worker"),
        cb.launch_polls,
        cb.one_at_a_time,
        cb.open_channels,
        lambda: cb.idle_cost(5.0 if args.quick else 10.0),
        cb.paired_prepares,
        cb.command_delivery,
        storm_alone,
        cb.storm_with_prepare,
    ]
    if args.profile:
        steps.append(
            lambda: cb.results["profile"].update(
                polls=cb.profile("polls", lambda: cb.launch_polls("launch poll wait=0 (profiled)"))
            )
        )
    for step in steps:
        step()
        save()
    cb.results["holder_final"] = cb.stop_channels()
    cb.server.stop()
    cb.results["targets"] = targets(cb.rows)
    cb.results["elapsed_s"] = round(time.monotonic() - t0, 1)
    save()
    print(f"\nresults: {path.relative_to(common.ROOT)} ({cb.results['elapsed_s']:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
