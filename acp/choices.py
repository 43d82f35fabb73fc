"""Kinds and states of the registry's credentials."""

from django.db import models


class ApiTokenKind(models.TextChoices):
    USER = "user", "user"
    DEVICE = "device", "device"


class Scope(models.TextChoices):
    """What a key may do: `read` the safe methods (GET, HEAD, OPTIONS), `write` everything else."""

    READ = "read", "read"
    WRITE = "write", "write"


FULL_SCOPES = [Scope.READ.value, Scope.WRITE.value]
READ_ONLY_SCOPES = [Scope.READ.value]


class PairingTokenStatus(models.TextChoices):
    PENDING = "pending", "pending"
    COMPLETED = "completed", "completed"
    EXPIRED = "expired", "expired"  # never stored: a pending token past its expiry reads so
    REVOKED = "revoked", "revoked"
