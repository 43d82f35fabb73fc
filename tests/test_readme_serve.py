"""The README as a newcomer runs it: `bin/serve` prints a token and serves the docs and the API, and the
"A full round trip" block (pair this machine, run its daemon, launch and steer a session) works as written."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)
    return result


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def served(tmp_path):
    """`bin/serve` on a free port and a temp SQLite file; yields (base URL, the printed token)."""
    port = free_port()
    # The embedded default is SQLite in the project folder; point it at a temp file so the test leaves nothing.
    env = {**os.environ, "PORT": str(port), "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}"}
    env.pop("SECRET_KEY", None)
    env.pop("DEBUG", None)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(REPO / "bin" / "serve")], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def ready():
        assert server.poll() is None, log.read_text()
        match = re.search(r"Demo token: (acp_\S+)", log.read_text())
        try:
            return match and httpx.get(f"{base}/healthz", timeout=2).status_code == 200 and match.group(1)
        except httpx.HTTPError:
            return None

    try:
        yield base, wait_for(ready, 120, "bin/serve")
    finally:
        stop(server)


def test_bin_serve_prints_a_token_that_works(served):
    base, token = served
    docs = httpx.get(f"{base}/api/docs/", timeout=10)
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    projects = httpx.get(f"{base}/v1/projects", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert projects.status_code == 200
    assert projects.json()["object"] == "list"
    assert httpx.get(f"{base}/v1/projects", timeout=10).status_code == 401


def round_trip_terminals() -> dict[str, str]:
    """The README's "A full round trip" block, split at its `# terminal N` comments."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### A full round trip") :]
    block = section[section.index("```sh\n") + 6 : section.index("\n```\n")]
    parts = re.split(r"^# (terminal \d)\b.*$", block, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def as_run_here(script: str, base: str, token: str) -> str:
    """The newcomer's two edits: paste the printed token; our server listens on a free port, not 8000."""
    return script.replace("TOKEN=acp_...", f"TOKEN={token}").replace("http://127.0.0.1:8000", base)


SETTLED = (
    'for _ in $(seq 150); do curl -s -H "$AUTH" $CONTROL'
    ' | jq -e \'all(.data[]; .status == "completed" or .status == "cancelled")\' >/dev/null && break; sleep 0.2; done'
)


def seen_through(script: str) -> str:
    """`script` with a bounded wait for the daemon after each control command (`-d '{"commandType": …}' $CONTROL`)."""
    lines = []
    for line in script.splitlines():
        lines.append(line)
        if '"commandType"' in line and "$CONTROL" in line:
            lines.append(SETTLED)
    return "\n".join(lines)


def bash(script: str, *, cwd, env, timeout=120) -> subprocess.CompletedProcess:
    """Run `script` as a newcomer pasting it would, but stopping at the first failing command."""
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert result.returncode == 0, f"{script}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    return result


def test_the_readme_round_trip_starts_from_pairing(served, tmp_path):
    base, token = served
    terminals = round_trip_terminals()
    assert set(terminals) == {"terminal 2", "terminal 3"}
    home = tmp_path / "home"
    home.mkdir()
    env = {**{k: v for k, v in os.environ.items() if k not in ("XDG_CONFIG_HOME", "ACP_DAEMON_CONFIG")},
           "HOME": str(home)}  # fmt: skip

    # Terminal 2, as written: pair this machine, then run its daemon (which keeps running).
    script = as_run_here(terminals["terminal 2"], base, token)
    assert "acp-daemon pair" in script and script.rstrip().endswith("acp-daemon --url $API")
    log_path = tmp_path / "terminal2.log"
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        auth = {"Authorization": f"Bearer {token}"}

        def online():
            assert daemon.poll() is None, log_path.read_text()
            return httpx.get(f"{base}/v1/devices?status=online", headers=auth, timeout=5).json()["total_count"]

        wait_for(online, 30, "the paired daemon to come online")
        assert "Paired this machine as device 'laptop'" in log_path.read_text()
        stored = home / ".config" / "acp" / "daemon.json"
        assert oct(stored.stat().st_mode & 0o777) == "0o600"

        # Terminal 3, as written: launch, then pause, resume, message and cancel it. A person looks at each
        # command's effect before typing the next (a resume sent before the pause completed is refused), so
        # after each control command the script waits, bounded, until the daemon has finished it.
        bash(seen_through(as_run_here(terminals["terminal 3"], base, token)), cwd=tmp_path, env=env)
        launch = json.loads((tmp_path / "launch.json").read_text())
        assert launch["status"] == "ok", launch
        control = (f"{base}/v1/threads/{launch['payload']['thread_id']}/local-sessions/"
                   f"{launch['payload']['local_session_id']}/control")  # fmt: skip

        def all_completed():
            commands = httpx.get(control, headers=auth, timeout=5).json()["data"]
            statuses = {c["commandType"]: c["status"] for c in commands}
            return statuses == dict.fromkeys(["pause", "resume", "message", "cancel"], "completed")

        wait_for(all_completed, 30, "the daemon to complete all four commands")
    finally:
        stop(daemon)


def test_every_way_to_serve_that_the_readme_and_bin_serve_name_reads_http_with_the_head_limit():
    """uvicorn's own `auto` protocol would be httptools without a limit on a head still arriving (a dependency)."""
    commands = [
        line
        for path in (REPO / "README.md", REPO / "bin" / "serve")
        for line in path.read_text().splitlines()
        if re.search(r"\b(gunicorn|uvicorn) acp\.asgi:application", line)
    ]
    assert any("gunicorn" in line for line in commands) and any("uvicorn acp" in line for line in commands)
    for line in commands:
        if "gunicorn acp.asgi:application" in line:
            assert "-k acp.serving.worker.UvicornWorker" in line, line
        else:
            assert "--http acp.serving.http:HttpToolsProtocol" in line, line
