"""The answer a launch request gets, `(http_status, {status, payload})`, from the launch's state."""

from acp.api.errors import error_body
from sessions.choices import AckStatus, LaunchStatus
from sessions.models import Launch

Answer = tuple[int, dict]


def launch_answer(launch: Launch) -> Answer | None:
    """The launch request's answer, or None while the launch is pending.

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


def launch_answer_or_404(launch: Launch | None) -> Answer | None:
    """`launch_answer`, where a launch that vanished meanwhile (support deleted it) answers 404."""
    if launch is None:
        return 404, error_body("Not found.", "not_found")
    return launch_answer(launch)


def launch_answer_by_id(launch_id) -> Answer | None:
    """`launch_answer` of a launch re-read from the database."""
    return launch_answer_or_404(Launch.objects.filter(pk=launch_id).first())


def _str_or_none(value):
    return None if value is None else str(value)
