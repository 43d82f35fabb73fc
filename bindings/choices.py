from django.db import models


class SyncMode(models.TextChoices):
    OFF = "off"
    MANUAL = "manual"
    WATCH = "watch"


class ExecutionMode(models.TextChoices):
    LEGACY_REMOTE = "legacy_remote"
    BRIDGE_LOCAL = "bridge_local"
