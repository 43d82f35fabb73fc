"""Fixtures of the sessions app: workspaces, launches, and (in live.py) real server and daemon processes."""

from datetime import timedelta

import pytest
from django.utils import timezone

from acp.models import Device
from sessions.choices import LaunchStatus
from sessions.models import Launch, Workspace
from tests.conftest import make_client, make_token


@pytest.fixture
def workspace(user, project, device):
    return Workspace.objects.create(user=user, name="acp", project=project, default_machine=device)


@pytest.fixture
def other_workspace(other_user, other_device):
    return Workspace.objects.create(user=other_user, name="theirs", default_machine=other_device)


@pytest.fixture
def second_device(user):
    return Device.objects.create(user=user, name="desktop", last_seen_at=timezone.now())


@pytest.fixture
def second_device_api(user, second_device):
    return make_client(make_token(user, device=second_device))


def make_launch(workspace, *, machine=None, status=LaunchStatus.PENDING, created_at=None, **fields):
    """A launch row as launch_create would leave it (pending, within its deadline unless told otherwise)."""
    created_at = created_at or timezone.now()
    fields.setdefault("expires_at", created_at + timedelta(seconds=10))
    return Launch.objects.create(
        user=workspace.user,
        workspace=workspace,
        machine=machine or workspace.default_machine,
        status=status,
        created_at=created_at,
        **fields,
    )


@pytest.fixture
def processes(transactional_db, tmp_path):
    """Start real servers and daemons (see tests/sessions/live.py); all are ended when the test ends, pass or fail.

    Their logs are printed at teardown: pytest shows them when the test failed.
    """
    from tests.sessions.live import ProcessManager

    manager = ProcessManager(tmp_path)
    try:
        yield manager
    finally:
        manager.stop_all()
        for process in manager.processes:
            print(f"===== {process.name} log =====\n{process.log()}")
