"""Reads of launches: the daemon's queue, and the answer a launch request gets."""

from django.db.models import QuerySet
from django.utils import timezone

from acp.cleanup import Target
from sessions.choices import LAUNCH_TERMINAL_STATES, AckStatus, LaunchStatus
from sessions.models import Launch


def launch_queue(*, machine_id, now=None) -> QuerySet[Launch]:
    """A machine's launches its daemon should start: pending and still within their deadline, oldest first."""
    now = now or timezone.now()
    return Launch.objects.filter(machine_id=machine_id, status=LaunchStatus.PENDING, expires_at__gt=now).order_by(
        "created_at", "id"
    )


def launch_answer(launch: Launch) -> tuple[int, dict] | None:
    """The launch request's answer `(http_status, {status, payload})`, or None while the launch is pending.

    "ok": the daemon's payload plus `launch_id`, `thread_id`, `local_session_id`; "error": the daemon's payload
    plus `launch_id` (`code` defaults to `daemon_error`); offline machine: 200 `machine_offline`; no answer in
    time: 504 `daemon_timeout`.
    """
    launch_id = str(launch.pk)
    if launch.status == LaunchStatus.PENDING:
        return None
    if launch.status == LaunchStatus.ACKNOWLEDGED:
        payload = {
            **(launch.ack_payload or {}),
            "launch_id": launch_id,
            "thread_id": _str_or_none(launch.thread_id),
            "local_session_id": _str_or_none(launch.local_session_id),
        }
        return 200, {"status": AckStatus.OK.value, "payload": payload}
    if launch.status == LaunchStatus.TIMED_OUT:
        return 504, {"status": AckStatus.ERROR.value, "payload": {"code": launch.error_code, "launch_id": launch_id}}
    payload = {**(launch.ack_payload or {}), "code": launch.error_code, "launch_id": launch_id}
    return 200, {"status": AckStatus.ERROR.value, "payload": payload}


def launch_answer_by_id(launch_id) -> tuple[int, dict] | None:
    """`launch_answer` of a launch re-read from the database (a vanished launch answers 404)."""
    launch = Launch.objects.filter(pk=launch_id).first()
    if launch is None:
        return 404, {"error": "Not found.", "code": "not_found", "details": {}}
    return launch_answer(launch)


def _str_or_none(value):
    return None if value is None else str(value)


# --- retention and the support dashboard (acp.composition) ----------------------------------------------------------


def retention_targets(*, cutoff, now, **options) -> list[Target]:
    """Finished launches last changed before `cutoff` (a pending one is never touched)."""
    return [Target("launches", Launch.objects.filter(status__in=LAUNCH_TERMINAL_STATES, updated_at__lt=cutoff))]


def dashboard_counts(*, now) -> dict[str, int]:
    start_of_day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "launches_timed_out_today": Launch.objects.filter(
            status=LaunchStatus.TIMED_OUT, updated_at__gte=start_of_day
        ).count(),
    }
