"""The registry every app shares: API tokens, projects, environments and devices."""

import json
import uuid
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone


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


class ApiToken(models.Model):
    """A bearer token. Only its SHA-256 is stored; the token itself is shown once, at creation.

    A token with a device acts only for that device's daemon work.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    device = models.ForeignKey(Device, on_delete=models.CASCADE, null=True, blank=True, related_name="api_tokens")
    name = models.CharField(max_length=200, blank=True, default="")
    key_prefix = models.CharField(max_length=16, help_text="The first characters, to recognise a token.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self):
        return f"{self.key_prefix}… ({self.name or 'unnamed'})"

    @property
    def kind(self) -> str:
        return "device" if self.device_id else "user"

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        if self.revoked_at is not None:
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

    class Meta(OwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_one_per_user_and_key")]

    def __str__(self):
        return self.key

    @property
    def response_json(self):
        return json.loads(self.response_body) if self.response_body else None
