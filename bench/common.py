"""Shared plumbing of the benchmarks: a throwaway PostgreSQL, the production server, /proc CPU readings.

Everything runs on loopback and is stopped at exit, also on failure (`atexit` and SIGTERM/SIGINT handlers).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
VENV_BIN = Path(sys.executable).parent
SECRET_KEY = "bench-only-secret-key-not-for-production"  # noqa: S105 - a throwaway database on loopback

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_cleanups: list = []


def at_exit(function) -> None:
    """Run `function` at exit (last registered, first run); safe to run twice."""
    _cleanups.append(function)


def _run_cleanups() -> None:
    while _cleanups:
        function = _cleanups.pop()
        try:
            function()
        except Exception as exc:  # noqa: BLE001 - cleanup must go on with the others
            print(f"cleanup failed: {exc!r}", file=sys.stderr)


atexit.register(_run_cleanups)


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)


for _signal in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(_signal, _exit_on_signal)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-file limit (inherited by its children) to `wanted`, within the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            # As root the hard limit may be raised too.
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- PostgreSQL --------------------------------------------------------------------------------------------------


def _pg_bindir() -> Path:
    candidates = []
    if shutil.which("pg_config"):
        with contextlib.suppress(subprocess.CalledProcessError):
            candidates.append(subprocess.check_output(["pg_config", "--bindir"], text=True).strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb")).resolve().parent))
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise SystemExit("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")


class Postgres:
    """A throwaway cluster in a temp dir on a free loopback port (as the `postgres` user when run as root).

    Tuned like bin/test's (fsync, synchronous_commit and full_page_writes off): the benchmarks measure CPU,
    not this machine's disk.
    """

    def __init__(self, *, max_connections: int = 400, shared_buffers: str = "256MB"):
        self.max_connections = max_connections
        self.shared_buffers = shared_buffers
        self.bindir = _pg_bindir()
        self.tmp: Path | None = None
        self.port: int | None = None
        self.run_as: list[str] = []
        self.started = False

    @property
    def url(self) -> str:
        return f"postgres://acp@127.0.0.1:{self.port}/acp"

    @property
    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=acp dbname=acp"

    def start(self) -> Postgres:
        self.tmp = Path(tempfile.mkdtemp(prefix="acp-bench-pg."))
        at_exit(self.stop)
        self.port = free_port()
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: run it as the postgres system user (created if missing).
            if subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
                subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
            shutil.chown(self.tmp, user="postgres")
            self.run_as = ["runuser", "-u", "postgres", "--"]
        data = self.tmp / "data"
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "acp",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
            ]
        )
        options = (
            f"-p {self.port} -k {self.tmp} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
            f"-c full_page_writes=off -c max_connections={self.max_connections} -c shared_buffers={self.shared_buffers}"
        )
        self._run(
            [str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(self.tmp / "server.log"), "-w", "-t", "60"]
            + ["-o", options, "start"]
        )
        self.started = True
        self._run([str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "acp", "acp"])
        return self

    def stop(self) -> None:
        if self.started:
            self.started = False
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run([str(self.bindir / "pg_ctl"), "-D", str(self.tmp / "data"), "-m", "immediate", "stop"])
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def pids(self) -> list[int]:
        """The postmaster and its backends."""
        try:
            master = int((self.tmp / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError, TypeError):
            return []
        return [master, *child_pids(master)]

    def psql(self, sql: str, *args: str) -> subprocess.CompletedProcess:
        command = [str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.url, *args]
        return subprocess.run(command, input=sql, text=True, capture_output=True, check=True)

    def _run(self, command: list[str]) -> None:
        result = subprocess.run(self.run_as + command, capture_output=True, text=True)
        if result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, command, result.stdout, result.stderr)


class Redis:
    """A throwaway redis-server on 127.0.0.1, nothing persisted (the shared rate-limit store)."""

    def __init__(self):
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> Redis:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
        at_exit(self.stop)
        command = [executable, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.process.returncode})")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer PING within {timeout:.0f}s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


# --- Django in this process ---------------------------------------------------------------------------------------


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    """The production settings the benchmarks run with (see README, "Configuration")."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="acp.settings",
        SECRET_KEY=SECRET_KEY,
        DATABASE_URL=database_url,
        DATABASE_POOL="1",
        DEBUG="0",
        SECURE_SSL_REDIRECT="0",
        LOG_LEVEL="WARNING",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        PYTHONWARNINGS="ignore::DeprecationWarning",
        # Off unless a scenario says otherwise (the ratelimit pair); with its defaults the load would be refused.
        ACP_RATELIMIT_ENABLED="0",
        # Longer than any scenario holds a stream (idle-streams: ramp, settle and two windows): a stream the
        # server ends on schedule within a window would be re-opened, and counted, as if it had failed.
        ACP_STREAM_MAX_SECONDS="3600",
    )
    env.update(extra)
    return env


def setup_django(database_url: str) -> None:
    """Configure Django in this process against the benchmark database (no pool: a script, not a server)."""
    os.environ.update(
        DJANGO_SETTINGS_MODULE="acp.settings",
        SECRET_KEY=SECRET_KEY,
        DATABASE_URL=database_url,
        DEBUG="0",
        SECURE_SSL_REDIRECT="0",
        LOG_LEVEL="WARNING",
    )
    os.environ.pop("DATABASE_POOL", None)
    os.chdir(ROOT)
    import django

    django.setup()


# --- the production server ----------------------------------------------------------------------------------------


class Server:
    """`gunicorn acp.asgi:application -k acp.serving.worker.UvicornWorker --workers N` on 127.0.0.1."""

    def __init__(self, database_url: str, *, workers: int, port: int | None = None, env: dict | None = None):
        self.database_url = database_url
        self.workers = workers
        self.port = port or free_port()
        self.extra_env = env or {}
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            str(VENV_BIN / "gunicorn"),
            "acp.asgi:application",
            "-k",
            "acp.serving.worker.UvicornWorker",
            "--workers",
            str(self.workers),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--backlog",
            "8192",
            "--timeout",
            "120",
            "--graceful-timeout",
            "5",
            # Keep-alive above the load generator's idle gaps, as behind a load balancer (whose idle timeout is
            # shorter than the server's); with gunicorn's 2 s default a request may meet a closing idle connection.
            "--keep-alive",
            "75",
            "--log-level",
            "warning",
        ]

    def start(self, timeout: float = 60.0) -> Server:
        handle, name = tempfile.mkstemp(prefix="acp-bench-server.", suffix=".log")
        os.close(handle)
        self.log_path = Path(name)
        at_exit(self.stop)
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env=server_env(self.database_url, **self.extra_env),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}):\n{self.log_tail()}")
            if len(self.worker_pids()) >= self.workers and self._healthy():
                return self
            time.sleep(0.2)
        raise RuntimeError(f"the server did not answer /healthz within {timeout:.0f}s:\n{self.log_tail()}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:  # noqa: S310 - loopback
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def worker_pids(self) -> list[int]:
        return child_pids(self.process.pid) if self.process else []

    def pids(self) -> list[int]:
        return [self.process.pid, *self.worker_pids()] if self.process else []

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()  # gunicorn's master stops its workers
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()
            self.log_path = None


# --- child processes and /proc -------------------------------------------------------------------------------------


def child_pids(parent: int) -> list[int]:
    children = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children.append(int(stat.split("/")[2]))
    return sorted(children)


_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (fields[11] is utime), or None if the process is gone;
    `pid` may be "PID/task/TID" for one thread."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _status_value(pid: int, key: str) -> int:
    """The number of a /proc/PID/status line (`VmRSS:`, `Threads:`…); 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pids) -> float:
    """User + system CPU seconds used so far by these processes (all their threads)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """User + system CPU seconds so far of the process's main thread (a uvicorn worker's event loop) and of all its
    other threads together (request threads, the LISTEN thread: Python does not name them in /proc)."""
    split = {"event loop": 0, "other threads": 0}
    for tid in (path.rsplit("/", 1)[1] for path in glob.glob(f"/proc/{pid}/task/[0-9]*")):
        fields = _stat_fields(f"{pid}/task/{tid}")
        if fields is not None:
            split["event loop" if tid == str(pid) else "other threads"] += int(fields[11]) + int(fields[12])
    return {name: ticks / _TICKS for name, ticks in split.items()}


def postgres_cpu_seconds(postmaster_pids) -> float:
    """CPU of a PostgreSQL cluster so far: its live processes, plus the backends that exited (the postmaster's
    cutime/cstime: it reaps them). `postmaster_pids()` returns [postmaster, *children]."""
    pids = list(postmaster_pids())
    if not pids:
        return 0.0
    fields = _stat_fields(pids[0])
    reaped = (int(fields[13]) + int(fields[14])) / _TICKS if fields is not None else 0.0
    return cpu_seconds(pids) + reaped


def peak_rss_mb(pid: int) -> float:
    """The process's peak RSS so far (VmHWM; per address space, so exec starts it afresh)."""
    return _status_value(pid, "VmHWM:") / 1024


def connections_per_process(port: int, pids) -> dict[int, int]:
    """How many established TCP connections to local `port` each process holds (from /proc, no tools needed)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 01: ESTABLISHED
                inodes.add(fields[9])
    counts = {}
    for pid in pids:
        count = 0
        for fd in glob.glob(f"/proc/{pid}/fd/*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                count += 1
        counts[pid] = count
    return counts


def rss_mb(pid: int) -> float:
    return _status_value(pid, "VmRSS:") / 1024


def thread_count(pid: int) -> int:
    return _status_value(pid, "Threads:")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class CpuMeter:
    """CPU used by groups of processes, and by the whole machine, between start() and stop()."""

    def __init__(self, groups: dict):
        self.groups = groups  # name -> callable returning pids
        self.before: dict[str, float] = {}

    def start(self) -> CpuMeter:
        self.t0 = time.monotonic()
        self.machine0 = machine_cpu()
        self.pids = {name: list(get()) for name, get in self.groups.items()}
        self.before = {name: self._seconds(name) for name in self.groups}
        return self

    def _seconds(self, name: str) -> float:
        if name == "postgres":  # backends come and go: count the exited ones too
            return postgres_cpu_seconds(self.groups[name])
        return cpu_seconds(self.pids[name])

    def stop(self) -> dict:
        elapsed = time.monotonic() - self.t0
        busy1, total1 = machine_cpu()
        busy0, total0 = self.machine0
        result = {}
        for name in self.groups:
            used = self._seconds(name) - self.before[name]
            result[f"{name}_cores"] = round(used / elapsed, 2)
            result[f"{name}_cpu_s"] = round(used, 2)
        result["machine_busy_fraction"] = round((busy1 - busy0) / max(1, total1 - total0), 2)
        return result


def run_child(script: str, spec: dict, *, timeout: float) -> dict:
    """Run `bench/<script>` with `spec` (JSON on stdin); returns the JSON it prints on its last stdout line."""
    process = start_child(script, spec)
    return finish_child(process, timeout=timeout)


def start_child(script: str, spec: dict) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, str(BENCH / script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )

    def kill():
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    at_exit(kill)
    process.stdin.write(json.dumps(spec))
    process.stdin.close()
    process.stdin = None  # so communicate() does not flush a closed pipe
    return process


def finish_child(process: subprocess.Popen, *, timeout: float) -> dict:
    try:
        out = process.stdout.read() if timeout is None else _read_with_timeout(process, timeout)
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    lines = [line for line in out.splitlines() if line.strip()]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"bench child failed (exit {process.returncode}): {out[-2000:]}")
    return json.loads(lines[-1])


def _read_with_timeout(process: subprocess.Popen, timeout: float) -> str:
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate(timeout=10)
        raise RuntimeError(f"bench child timed out after {timeout:.0f}s") from None
    return out


def percentile(values, fraction: float) -> float | None:
    """Nearest-rank percentile of `values` (fraction in 0..1)."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[index]


def summarise(latencies_ms: list[float]) -> dict:
    return {
        "p50_ms": _round(percentile(latencies_ms, 0.50)),
        "p99_ms": _round(percentile(latencies_ms, 0.99)),
        "max_ms": _round(max(latencies_ms) if latencies_ms else None),
    }


def _round(value, digits: int = 1):
    return None if value is None else round(value, digits)
