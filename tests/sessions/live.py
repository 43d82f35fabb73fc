"""Real processes for end-to-end tests: uvicorn serving acp.asgi on the test database, and the reference daemon.

Every process started here is ended by the fixture's finalizer (SIGTERM, then SIGKILL), even when the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import redis
from django.db import connection

from acp.serving.http import PROTOCOL

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url_for_tests(application_name: str) -> str:
    """A DATABASE_URL for the database this test runs on (NAME is the test database)."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{credentials}@{host}:{port}/{db['NAME']}?application_name={application_name}"


def wait_until(predicate, timeout: float, interval: float = 0.05, message: str = "condition"):
    """Poll `predicate` until it returns something truthy; return it, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def listener_state(base_url: str) -> dict:
    """The server's LISTEN connection and its number of waiting long-polls, from its /healthz."""
    return httpx.get(f"{base_url}/healthz", timeout=5).json()["listener"]


def wait_for_waiters(base_url: str, count: int, timeout: float = 30) -> None:
    """Until `count` long-polls wait in the server at `base_url` (subscribed: a notification now wakes them)."""
    wait_until(lambda: listener_state(base_url)["waiters"] >= count, timeout, 0.05, f"{count} waiters")


async def until_waiters(base_url: str, count: int, timeout: float = 30) -> None:
    """`wait_for_waiters` for a test whose clients run in this event loop (they must keep running meanwhile)."""
    async with httpx.AsyncClient(timeout=timeout) as client:  # behind the polls in the queue of request threads
        deadline = time.monotonic() + timeout
        while (waiters := (await client.get(f"{base_url}/healthz")).json()["listener"]["waiters"]) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {count} waiters ({waiters} waiting)")
            await asyncio.sleep(0.05)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        return self.popen.returncode


@dataclass
class Server(Process):
    port: int = 0
    application_name: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self, method: str, path_prefix: str) -> int:
        """How many `method` requests for a path starting with `path_prefix` its access log shows (`access_log`)."""
        return self.log().count(f'"{method} {path_prefix}')


@dataclass
class RedisServer(Process):
    port: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@dataclass
class ProcessManager:
    """Starts servers and daemons for one test and ends them all (and any agent pids it was told of) at the end."""

    tmp_path: Path
    processes: list[Process] = field(default_factory=list)
    agent_pids: set[int] = field(default_factory=set)

    def start_server(
        self,
        name: str = "acp-test-server",
        *,
        port: int | None = None,
        gunicorn: bool = False,
        access_log: bool = False,
        **env,
    ) -> Server:
        """uvicorn serving acp.asgi, as bin/serve runs it; with `gunicorn`, as in production: gunicorn with one of
        ACP's UvicornWorkers (acp/serving/worker.py). Either way HTTP is read by acp/serving/http.py.

        With `access_log`, uvicorn logs every request it takes in (`Server.requests` counts them)."""
        port = port or free_port()
        environment = {
            **os.environ,
            "DATABASE_URL": database_url_for_tests(name),
            "SECRET_KEY": "live-test-secret-key",
            "DEBUG": "0",
            "SECURE_SSL_REDIRECT": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
            **{key: str(value) for key, value in env.items()},
        }
        command = [sys.executable, "-m", "uvicorn", "acp.asgi:application", "--http", PROTOCOL, "--host", "127.0.0.1",
                   "--port", str(port), "--log-level", "info" if access_log else "warning"]  # fmt: skip
        if gunicorn:
            command = [sys.executable, "-m", "gunicorn", "acp.asgi:application",
                       "-k", "acp.serving.worker.UvicornWorker", "--workers", "1", "--bind", f"127.0.0.1:{port}",
                       "--graceful-timeout", "30"]  # fmt: skip
        server = Server(name, self._spawn(name, command, environment), self._log_path(name), port, name)
        self.processes.append(server)
        wait_until(lambda: self._healthy(server), 30, 0.1, f"{name} to answer /healthz")
        return server

    def start_daemon(self, server: Server, token: str | None, *args: str, name: str = "acp-daemon") -> Process:
        """The reference daemon; `token=None` runs it without --token (on the key `acp-daemon pair` stored)."""
        credentials = ["--token", token] if token else []
        command = [sys.executable, "-m", "acp.daemon", "--url", server.url, *credentials,
                   "--wait", "5", "--heartbeat-interval", "1", "--max-backoff", "1", *args]  # fmt: skip
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        daemon = Process(name, self._spawn(name, command, environment), self._log_path(name))
        self.processes.append(daemon)
        return daemon

    def start_redis(self, name: str = "redis") -> RedisServer:
        """A throwaway redis-server on a free loopback port, nothing persisted."""
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.fail("redis-server is not installed (Debian: apt-get install redis-server; .ci/run does it).")
        port = free_port()
        command = [executable, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
        process = RedisServer(name, self._spawn(name, command, dict(os.environ)), self._log_path(name), port)
        self.processes.append(process)
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)

        def answers() -> bool:
            if not process.alive():
                pytest.fail(f"{name} exited with {process.popen.returncode}:\n{process.log()}")
            try:
                return client.ping()
            except redis.ConnectionError:
                return False

        wait_until(answers, 10, 0.05, f"{name} to answer PING")
        client.close()
        return process

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        for pid in self.agent_pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    def _spawn(self, name: str, command: list[str], environment: dict) -> subprocess.Popen:
        log = self._log_path(name).open("ab")
        try:
            return subprocess.Popen(
                command, cwd=REPO_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()

    def _log_path(self, name: str) -> Path:
        return self.tmp_path / f"{name}.log"

    @staticmethod
    def _healthy(server: Server) -> bool:
        if not server.alive():
            pytest.fail(f"{server.name} exited with {server.popen.returncode}:\n{server.log()}")
        try:
            return httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False


def established_connections(pid: int, port: int) -> int:
    """How many TCP connections process `pid` holds open to 127.0.0.1:`port` (its socket fds, looked up in
    /proc/net/tcp: remote address 127.0.0.1:port, state ESTABLISHED)."""
    fd_dir = Path(f"/proc/{pid}/fd")
    inodes = set()
    with contextlib.suppress(FileNotFoundError):
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    remote = f"0100007F:{port:04X}"
    count = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[2] == remote and fields[3] == "01" and fields[9] in inodes:
            count += 1
    return count


@contextlib.contextmanager
def connections_sampled(pid: int, port: int, interval: float = 0.005):
    """While the block runs, count `pid`'s connections to `port` every `interval` seconds; yields the counts."""
    samples: list[int] = []
    done = threading.Event()

    def sample():
        while not done.is_set():
            with contextlib.suppress(FileNotFoundError):  # the process is gone
                samples.append(established_connections(pid, port))
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield samples
    finally:
        done.set()
        sampler.join()


def process_state(pid: int) -> str | None:
    """The one-letter state of `pid` from /proc (R, S, T for stopped, Z…), or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _postgres_bindir() -> Path:
    candidates = [*sorted(Path("/usr/lib/postgresql").glob("*/bin")), Path(shutil.which("pg_ctl") or "/").parent]
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found")


@dataclass
class Postgres:
    """A PostgreSQL cluster of a test's own (initdb on a free port, as bin/test does), to stop and start at will.

    Run as the `postgres` user when the tests run as root (PostgreSQL refuses root). `remove()` stops and deletes it.
    """

    directory: Path
    port: int
    bindir: Path

    @classmethod
    def create(cls) -> Postgres:
        directory = Path(tempfile.mkdtemp(prefix="acp-fault-pg-"))
        postgres = cls(directory, free_port(), _postgres_bindir())
        if os.getuid() == 0:
            shutil.chown(directory, "postgres")
        postgres._run("initdb", "-D", str(directory / "data"), "-U", "acp", "--auth=trust", "--no-locale")
        postgres.start()
        postgres._run("createdb", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "acp", "acp")
        return postgres

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.directory / "server.log")
        self._run("pg_ctl", "-D", str(self.directory / "data"), "-l", log, "-w", "-t", "30", "-o", options, "start")

    def stop(self, mode: str = "immediate") -> None:
        self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def url(self, application_name: str) -> str:
        return f"postgres://acp@127.0.0.1:{self.port}/acp?application_name={application_name}"

    def query(self, sql: str, params=()) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url("acp-test"), autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    def manage(self, *args: str) -> str:
        """`manage.py ARGS` against this cluster; its output."""
        environment = {**os.environ, "DATABASE_URL": self.url("acp-manage"), "SECRET_KEY": "live-test-secret-key"}
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=environment, capture_output=True, text=True
        )
        if done.returncode:
            pytest.fail(f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def _run(self, program: str, *args: str) -> None:
        run_as = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        subprocess.run([*run_as, str(self.bindir / program), *args], check=True, capture_output=True, timeout=60)
