from django.db import models


class ThreadStatus(models.TextChoices):
    ACTIVE = "active"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


THREAD_TERMINAL_STATES = frozenset({ThreadStatus.COMPLETED, ThreadStatus.FAILED, ThreadStatus.CANCELLED})

# from-state -> states a client may move a thread to (PATCH); an ended thread keeps its status.
THREAD_ALLOWED_TRANSITIONS = {
    ThreadStatus.ACTIVE: {ThreadStatus.RUNNING, *THREAD_TERMINAL_STATES},
    ThreadStatus.RUNNING: {ThreadStatus.ACTIVE, *THREAD_TERMINAL_STATES},
    ThreadStatus.COMPLETED: set(),
    ThreadStatus.FAILED: set(),
    ThreadStatus.CANCELLED: set(),
}


class SessionStatus(models.TextChoices):
    CREATED = "created"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


SESSION_TERMINAL_STATES = frozenset({SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.CANCELLED})


class CommandType(models.TextChoices):
    CANCEL = "cancel"
    PAUSE = "pause"
    RESUME = "resume"
    MESSAGE = "message"


class CommandStatus(models.TextChoices):
    PENDING = "pending"
    ACKNOWLEDGED = "acknowledged"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


COMMAND_TERMINAL_STATES = frozenset({CommandStatus.COMPLETED, CommandStatus.CANCELLED})

# from-state -> states an ack may move a command to (a repeat of the current state is a no-op, not a move).
COMMAND_ALLOWED_TRANSITIONS = {
    CommandStatus.PENDING: {CommandStatus.ACKNOWLEDGED, CommandStatus.COMPLETED, CommandStatus.CANCELLED},
    CommandStatus.ACKNOWLEDGED: {CommandStatus.COMPLETED, CommandStatus.CANCELLED},
    CommandStatus.COMPLETED: set(),
    CommandStatus.CANCELLED: set(),
}

# The statuses a local session may be created in; the terminal ones are reached only through `complete` or a cancel.
SESSION_START_STATES = frozenset({SessionStatus.CREATED, SessionStatus.RUNNING})


class EventSource(models.TextChoices):
    DAEMON = "daemon"
    SERVER = "server"
    USER = "user"


class EventType:
    """The types of the server's own timeline events (daemons and users name theirs freely)."""

    LAUNCH_REQUESTED = "launch.requested"
    LAUNCH_ACKNOWLEDGED = "launch.acknowledged"
    LAUNCH_FAILED = "launch.failed"
    LAUNCH_TIMED_OUT = "launch.timed_out"
    SESSION_CREATED = "session.created"
    SESSION_PAUSED = "session.paused"
    SESSION_RESUMED = "session.resumed"
    SESSION_ENDED = "session.ended"
    COMMAND_QUEUED = "command.queued"
    # command.acknowledged, command.completed, command.cancelled: "command." + the command's new status
    COMMAND_PREFIX = "command."
