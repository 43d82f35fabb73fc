from django.db import models


class LaunchStatus(models.TextChoices):
    """Where a launch stands. Only `pending` moves; the three others are final."""

    PENDING = "pending"  # recorded and offered to the machine's daemon, waiting for its acknowledgement
    ACKNOWLEDGED = "acknowledged"  # the daemon answered "ok": the agent runs, thread and local session exist
    FAILED = "failed"  # the daemon answered "error", or the machine was offline (never offered)
    TIMED_OUT = "timed_out"  # no acknowledgement within ACP_LAUNCH_ACK_TIMEOUT; a late ack gets 409


LAUNCH_TERMINAL_STATES = frozenset({LaunchStatus.ACKNOWLEDGED, LaunchStatus.FAILED, LaunchStatus.TIMED_OUT})


class AckStatus(models.TextChoices):
    """What the daemon answered (the `status` of its acknowledgement)."""

    OK = "ok"
    ERROR = "error"


class LaunchErrorCode(models.TextChoices):
    """Why a launch did not start, as the client reads it in `payload.code`."""

    MACHINE_OFFLINE = "machine_offline"
    DAEMON_TIMEOUT = "daemon_timeout"
    DAEMON_ERROR = "daemon_error"  # the daemon said "error" without a code of its own


class CodeMode(models.TextChoices):
    AGENT = "agent"
    PLAN = "plan"
    ASK = "ask"


class Thinking(models.TextChoices):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class ChannelEvent(models.TextChoices):
    """The events of a machine's channel (GET /api/v1/machines/{id}/stream)."""

    LAUNCH = "launch"  # a pending launch, as the launches poll returns it
    COMMAND = "command"  # a pending control command of a session on the machine, as the control poll returns it
    REPLACED = "replaced"  # another channel for the machine opened: this one ends
