"""The registry every app shares: API tokens, projects, environments and devices."""

import json
import uuid
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone

from acp.choices import FULL_SCOPES, ApiTokenKind, PairingTokenStatus


class User(AbstractUser):
    """Django's user with a UUID key: every id on the wire, `userId` included, is a UUID string."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)


class OwnedModel(models.Model):
    """A UUID-keyed object with one owner and creation/update times."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
        ordering = ["-created_at", "-id"]


class Project(OwnedModel):
    name = models.CharField(max_length=200)

    class Meta(OwnedModel.Meta):
        indexes = [models.Index(fields=["user", "-created_at"], name="project_user_created")]

    def __str__(self):
        return self.name


class Environment(OwnedModel):
    """A remote computer ("Computer ID"). A user has at most one default environment (`acp.services`)."""

    name = models.CharField(max_length=200)
    is_default = models.BooleanField(default=False)

    class Meta(OwnedModel.Meta):
        indexes = [models.Index(fields=["user", "-created_at"], name="environment_user_created")]
        constraints = [
            models.UniqueConstraint(
                fields=["user"], condition=models.Q(is_default=True), name="environment_one_default_per_user"
            ),
        ]

    def __str__(self):
        return self.name


class DeviceQuerySet(models.QuerySet):
    def online(self, now=None):
        return self.filter(last_seen_at__gte=Device.online_since(now))

    def offline(self, now=None):
        return self.exclude(last_seen_at__gte=Device.online_since(now))


class Device(OwnedModel):
    """A user's own computer running the ACP daemon (a "machine" in the /api/v1 family)."""

    name = models.CharField(max_length=200)
    platform = models.CharField(max_length=100, blank=True, default="")
    hostname = models.CharField(max_length=255, blank=True, default="")
    app_version = models.CharField(max_length=100, blank=True, default="")
    daemon_version = models.CharField(max_length=100, blank=True, default="")
    capabilities = models.JSONField(default=dict, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    # The machine's one channel (GET /api/v1/machines/{id}/stream): the id of the one whose connect arrived last, and
    # when it arrived (sessions/services.py machine_channel_open). A channel that finds another id here was replaced;
    # the process holding it keeps last_seen_at fresh meanwhile.
    channel_id = models.UUIDField(null=True, blank=True, unique=True, editable=False)
    channel_opened_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = DeviceQuerySet.as_manager()

    class Meta(OwnedModel.Meta):
        indexes = [models.Index(fields=["user", "-created_at"], name="device_user_created")]

    def __str__(self):
        return self.name

    @staticmethod
    def online_since(now=None):
        now = now or timezone.now()
        return now - timedelta(seconds=settings.ACP_DEVICE_OFFLINE_AFTER)

    def is_online(self, now=None) -> bool:
        return self.last_seen_at is not None and self.last_seen_at >= self.online_since(now)

    @property
    def status(self) -> str:
        return "online" if self.is_online() else "offline"


def full_scopes():
    return list(FULL_SCOPES)


class PairingToken(models.Model):
    """A one-time code that lets a machine register itself as the user's device and receive a device key.

    Only its SHA-256 is stored. `status` holds pending, completed or revoked; a pending token past
    `expires_at` reads `expired` (`current_status`).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="pairing_tokens")
    name = models.CharField(max_length=200, blank=True, default="")
    token_prefix = models.CharField(max_length=16, help_text="The first characters, to recognise a token.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    status = models.CharField(
        max_length=16,
        choices=[(s.value, s.label) for s in PairingTokenStatus if s != PairingTokenStatus.EXPIRED],
        default=PairingTokenStatus.PENDING,
    )
    device = models.ForeignKey(
        Device, on_delete=models.SET_NULL, null=True, blank=True, related_name="pairing_tokens",
        help_text="The device the exchange registered or re-paired.",
    )  # fmt: skip
    expires_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "-created_at"], name="pairingtoken_user_created")]
        constraints = [
            models.CheckConstraint(
                name="pairingtoken_completed_has_time",
                condition=~models.Q(status=PairingTokenStatus.COMPLETED) | models.Q(completed_at__isnull=False),
            ),
        ]

    def __str__(self):
        return f"{self.token_prefix}… ({self.name or 'unnamed'})"

    def current_status(self, now=None) -> str:
        if self.status == PairingTokenStatus.PENDING and self.expires_at <= (now or timezone.now()):
            return PairingTokenStatus.EXPIRED
        return self.status


class PairingFailure(models.Model):
    """One exchange with an unknown pairing token, by client address: what the per-address limit counts."""

    address = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["address", "created_at"], name="pairingfailure_address_time")]

    def __str__(self):
        return f"{self.address} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class ApiToken(models.Model):
    """An API key (bearer token). Only its SHA-256 is stored; the key itself is shown once, at creation.

    A `device` key acts only for that device's daemon work. `scopes` limit what any key may do (`read`:
    safe methods; `write`: the rest). Deleting a device revokes its keys first (`services.device_delete`): the
    database refuses a device key that is left without its device and not revoked, so one can never turn
    into a user key.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    kind = models.CharField(max_length=8, choices=ApiTokenKind.choices, default=ApiTokenKind.USER)
    device = models.ForeignKey(Device, on_delete=models.SET_NULL, null=True, blank=True, related_name="api_tokens")
    name = models.CharField(max_length=200, blank=True, default="")
    scopes = models.JSONField(default=full_scopes)
    key_prefix = models.CharField(max_length=16, help_text="The first characters, to recognise a token.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    pairing_token = models.OneToOneField(
        PairingToken, on_delete=models.SET_NULL, null=True, blank=True, related_name="api_key", editable=False,
        help_text="The pairing token whose exchange minted this key (at most one key per pairing token).",
    )  # fmt: skip
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"
        indexes = [models.Index(fields=["user", "-created_at"], name="apitoken_user_created")]
        constraints = [
            models.CheckConstraint(
                name="apitoken_user_kind_has_no_device",
                condition=~models.Q(kind=ApiTokenKind.USER) | models.Q(device__isnull=True),
            ),
            models.CheckConstraint(
                name="apitoken_device_kind_has_device_or_is_revoked",
                condition=~models.Q(kind=ApiTokenKind.DEVICE)
                | models.Q(device__isnull=False)
                | models.Q(revoked_at__isnull=False),
            ),
        ]

    def __str__(self):
        return f"{self.key_prefix}… ({self.name or 'unnamed'})"

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        if self.revoked_at is not None or (self.kind == ApiTokenKind.DEVICE and self.device_id is None):
            return False
        return self.expires_at is None or self.expires_at > now


class IdempotencyKey(OwnedModel):
    """The first answer to a create made with an `Idempotency-Key` (per user), replayed to its repeats.

    `response_status` is null while the first request is in flight (a launch waiting for its daemon).
    """

    key = models.CharField(max_length=255)
    request_fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the method, path and body.")
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True, default="", help_text="The first answer's JSON, byte for byte.")
    resource_id = models.UUIDField(null=True, blank=True, help_text="The id of what the first request created.")
    sealed = models.BooleanField(
        default=False, help_text="The answer holds a secret (a new key): stored encrypted, shown to nobody here."
    )

    class Meta(OwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_one_per_user_and_key")]

    def __str__(self):
        return self.key

    @property
    def response_json(self):
        if self.sealed or not self.response_body:
            return None
        return json.loads(self.response_body)
