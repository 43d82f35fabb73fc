"""Schema fuzzing: schemathesis drives every operation of /api/schema/ against the app on PostgreSQL.

Positive and negative data, authenticated, 50 examples per operation (ACP_FUZZ_EXAMPLES). Path ids are
pinned to real objects of the fuzzing user, so requests reach the code behind the lookups. Fails on
any 5xx and on any response (status code, content type, body) that the schema does not document.
"""

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from acp.models import Device, Environment, Project
from acp.services import pairing_token_create
from bindings.models import SyncSession, WorkspaceBinding
from commands.models import ControlCommand, LocalSession, Thread
from sessions.models import Launch, Workspace
from tests.conftest import make_token, make_user

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES_PER_OPERATION = int(os.environ.get("ACP_FUZZ_EXAMPLES", "50"))
LAUNCH_PATH = "/api/v1/workspaces/{workspace_id}/sessions"
OUTPUT_DIR = Path(__file__).resolve().parents[2] / "test-output"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def seed(user) -> tuple[dict[str, str], dict[str, str]]:
    """Real objects of `user`: (values by path parameter name, values of `{id}` by path)."""
    now = timezone.now()
    project = Project.objects.create(user=user, name="fuzz project")
    environment = Environment.objects.create(user=user, name="fuzz environment")
    device = Device.objects.create(user=user, name="fuzz device", last_seen_at=now + timedelta(days=1))
    binding = WorkspaceBinding.objects.create(user=user, device=device, environment=environment, local_path="/fz")
    common = {"user": user, "workspace_binding": binding, "device": device, "environment": environment}
    push = SyncSession.objects.create(**common, direction="push", plan_signature="fuzz")
    pull = SyncSession.objects.create(**common, direction="pull", plan_signature="fuzz")
    thread = Thread.objects.create(user=user, environment=environment, title="fuzz")
    session = LocalSession.objects.create(user=user, thread=thread, device=device, status="running")
    command = ControlCommand.objects.create(user=user, session=session, thread=thread, command_type="pause")
    workspace = Workspace.objects.create(user=user, name="fuzz", project=project, default_machine=device)
    launch = Launch.objects.create(user=user, workspace=workspace, machine=device, expires_at=now + timedelta(hours=1))
    named = {
        "bindingId": binding.pk,
        "threadId": thread.pk,
        "localSessionId": session.pk,
        "commandId": command.pk,
        "workspace_id": workspace.pk,
        "machine_id": device.pk,
        "launch_id": launch.pk,
    }
    by_path = {
        "/v1/projects/{id}": project.pk,
        "/v1/environments/{id}": environment.pk,
        "/v1/devices/{id}": device.pk,
        "/v1/devices/{id}/heartbeat": device.pk,
        "/v1/workspace-bindings/{id}": binding.pk,
        "/api/v1/workspaces/{id}": workspace.pk,
        # API keys stay unpinned: revoking the fuzzer's own key would end the run.
        "/v1/local-runner-pairing-tokens/{id}": pairing_token_create(user=user).pairing_token.pk,
    }
    for path in ("", "/cancel"):
        by_path[f"/v1/workspace-bindings/{{bindingId}}/push-sessions/{{id}}{path}"] = push.pk
    for path in ("", "/cancel", "/apply-preview", "/apply-result"):
        by_path[f"/v1/workspace-bindings/{{bindingId}}/pull-sessions/{{id}}{path}"] = pull.pk
    return {k: str(v) for k, v in named.items()}, {k: str(v) for k, v in by_path.items()}


def write_config(path: Path, named: dict[str, str], by_path: dict[str, str]) -> None:
    """Pin path ids to real objects; DELETEs keep generated ids so they don't remove what others need."""
    lines = ["[parameters]"]
    lines += [f'"path.{name}" = "{value}"' for name, value in named.items()]
    for route, value in by_path.items():
        lines += ["", "[[operations]]", f'include-path = "{route}"', 'exclude-method = "DELETE"']
        lines += ["[operations.parameters]", f'"path.id" = "{value}"']
    # A launch no daemon answers is a documented 504 (daemon_timeout), not a server fault.
    lines += ["", "[[operations]]", f'include-path = "{LAUNCH_PATH}"', 'include-method = "POST"']
    lines += ["[operations.checks.not_a_server_error]", 'expected-statuses = ["2xx", "3xx", "4xx", "504"]']
    path.write_text("\n".join(lines) + "\n")


def test_every_operation_survives_fuzzing(live_server, settings, tmp_path: Path):
    # Keep the waiting endpoints short: the fuzzer has no daemon to answer them.
    settings.ACP_LAUNCH_ACK_TIMEOUT = 0.1
    settings.ACP_LONG_POLL_MAX_WAIT = 0.1
    settings.ACP_STREAM_MAX_SECONDS = 0.2  # an event stream (stream=true) ends by itself
    settings.ACP_CHANNEL_MAX_SECONDS = 0.05  # and so does a machine's channel (every valid example opens one)
    user = make_user("fuzzer")
    named, by_path = seed(user)
    token = make_token(user)
    config = tmp_path / "schemathesis.toml"
    write_config(config, named, by_path)
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(config),
        "run",
        f"{live_server.url}/api/schema/",
        "--header",
        f"Authorization: Bearer {token}",
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--mode",
        "all",
        "--checks",
        CHECKS,
        "--seed",
        "20261123",
        "--workers",
        "1",  # hypothesis' internal caches are not thread-safe: 4 workers once died on a KeyError inside them
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "all",
        "--no-shrink",
        "--warnings",
        "off",
    ]
    env = {**os.environ, "NO_COLOR": "1"}
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1500, cwd=tmp_path)
    output = completed.stdout + completed.stderr
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUTPUT_DIR / "schemathesis.txt").write_text(output)
    tested = re.search(r"Tested:\s*(\d+)", output)
    generated = re.search(r"(\d+) generated", output)
    print(
        f"\nschemathesis: {tested and tested.group(1)} operations x up to {EXAMPLES_PER_OPERATION} examples "
        f"per phase, {generated and generated.group(1)} test cases"
    )
    failures = "\n".join(line for line in output.splitlines() if re.match(r"^(_{5,} |- ST\d|\s+curl )", line))
    assert completed.returncode == 0, f"{failures}\n\nfull output: {OUTPUT_DIR / 'schemathesis.txt'}"
    assert tested and int(tested.group(1)) >= 30, output[-3000:]
