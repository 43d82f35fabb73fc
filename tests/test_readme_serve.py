"""The README's first command, as a newcomer runs it: `bin/serve` prints a token, serves the docs and the API."""

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_bin_serve_prints_a_token_that_works(tmp_path):
    port = free_port()
    # The embedded default is SQLite in the project folder; point it at a temp file so the test leaves nothing.
    env = {**os.environ, "PORT": str(port), "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}"}
    env.pop("SECRET_KEY", None)
    env.pop("DEBUG", None)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(REPO / "bin" / "serve")],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        token = None
        while time.monotonic() < deadline:
            match = re.search(r"Demo token: (acp_\S+)", log.read_text())
            if match:
                token = match.group(1)
                try:
                    if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            assert server.poll() is None, log.read_text()
            time.sleep(0.3)
        assert token, log.read_text()

        docs = httpx.get(f"{base}/api/docs/", timeout=10)
        assert docs.status_code == 200 and "swagger-ui" in docs.text
        projects = httpx.get(f"{base}/v1/projects", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert projects.status_code == 200
        assert projects.json()["object"] == "list"
        assert httpx.get(f"{base}/v1/projects", timeout=10).status_code == 401
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
