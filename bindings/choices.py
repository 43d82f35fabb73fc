from django.db import models


class SyncMode(models.TextChoices):
    OFF = "off"
    MANUAL = "manual"
    WATCH = "watch"


class ExecutionMode(models.TextChoices):
    LEGACY_REMOTE = "legacy_remote"
    BRIDGE_LOCAL = "bridge_local"


class SyncDirection(models.TextChoices):
    PUSH = "push"
    PULL = "pull"


class SyncSessionStatus(models.TextChoices):
    PREPARED = "prepared"
    SUPERSEDED = "superseded"
    CANCELLED = "cancelled"


# Only a prepared session moves, and only to one of the terminal states.
ALLOWED_TRANSITIONS = {
    SyncSessionStatus.PREPARED: frozenset({SyncSessionStatus.SUPERSEDED, SyncSessionStatus.CANCELLED}),
    SyncSessionStatus.SUPERSEDED: frozenset(),
    SyncSessionStatus.CANCELLED: frozenset(),
}
