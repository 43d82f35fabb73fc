"""Real processes for end-to-end tests: uvicorn serving acp.asgi on the test database, and the reference daemon.

Every process started here is ended by the fixture's finalizer (SIGTERM, then SIGKILL), even when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import redis
from django.db import connection

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

    def start_server(self, name: str = "acp-test-server", *, port: int | None = None, **env) -> Server:
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
        command = [sys.executable, "-m", "uvicorn", "acp.asgi:application", "--host", "127.0.0.1",
                   "--port", str(port), "--log-level", "warning"]  # fmt: skip
        server = Server(name, self._spawn(name, command, environment), self._log_path(name), port, name)
        self.processes.append(server)
        wait_until(lambda: self._healthy(server), 30, 0.1, f"{name} to answer /healthz")
        return server

    def start_daemon(self, server: Server, token: str, *args: str, name: str = "acp-daemon") -> Process:
        command = [sys.executable, "-m", "acp.daemon", "--url", server.url, "--token", token,
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


def process_state(pid: int) -> str | None:
    """The one-letter state of `pid` from /proc (R, S, T for stopped, Z…), or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]
