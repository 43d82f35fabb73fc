"""Every write and state change of threads, local sessions and control commands."""

from django.db import transaction
from django.utils import timezone

from commands.choices import SessionStatus
from commands.models import LocalSession, Thread


@transaction.atomic
def thread_create(*, user, environment=None, title: str = "", metadata: dict | None = None) -> Thread:
    """Create a thread owned by `user`."""
    return Thread.objects.create(user=user, environment=environment, title=title, metadata=metadata or {})


@transaction.atomic
def local_session_create(
    *,
    user,
    thread: Thread,
    device,
    workspace_binding=None,
    status: str = SessionStatus.CREATED,
    started_at=None,
    metadata: dict | None = None,
) -> LocalSession:
    """Create a local session of `thread` on `device` (both `user`'s). `environment` follows the binding."""
    if status == SessionStatus.RUNNING and started_at is None:
        started_at = timezone.now()
    environment_id = workspace_binding.environment_id if workspace_binding else thread.environment_id
    return LocalSession.objects.create(
        user=user,
        thread=thread,
        device=device,
        workspace_binding=workspace_binding,
        environment_id=environment_id,
        status=status,
        started_at=started_at,
        metadata=metadata or {},
    )
