import pytest
from django.utils import timezone

from acp.models import Device, Environment
from bindings.models import WorkspaceBinding


@pytest.fixture
def binding(user, device, environment, project):
    return WorkspaceBinding.objects.create(
        user=user, device=device, environment=environment, project=project, name="acp", local_path="/home/alice/acp"
    )


@pytest.fixture
def other_binding(other_user, other_device):
    environment = Environment.objects.create(user=other_user, name="their box")
    return WorkspaceBinding.objects.create(
        user=other_user, device=other_device, environment=environment, local_path="/home/mallory/x"
    )


@pytest.fixture
def second_device(user):
    return Device.objects.create(user=user, name="desktop", last_seen_at=timezone.now())
