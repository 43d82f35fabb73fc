from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin

from acp import services
from acp.admin_json import pretty_json_field
from acp.models import ApiToken, Device, Environment, IdempotencyKey, Project, User

admin.site.register(User, UserAdmin)


class OwnedAdmin(admin.ModelAdmin):
    list_select_related = ["user"]
    search_fields = ["id", "name", "user__username", "user__email"]
    autocomplete_fields = ["user"]
    readonly_fields = ["id", "created_at", "updated_at"]
    date_hierarchy = "created_at"


@admin.register(Project)
class ProjectAdmin(OwnedAdmin):
    list_display = ["name", "user", "created_at", "updated_at"]


@admin.register(Environment)
class EnvironmentAdmin(OwnedAdmin):
    list_display = ["name", "user", "created_at", "updated_at"]


@admin.register(Device)
class DeviceAdmin(OwnedAdmin):
    list_display = ["name", "user", "status", "platform", "hostname", "daemon_version", "last_seen_at"]
    search_fields = [*OwnedAdmin.search_fields, "hostname"]
    readonly_fields = [*OwnedAdmin.readonly_fields, "last_seen_at", "status", "capabilities_pretty"]
    exclude = ["capabilities"]
    capabilities_pretty = pretty_json_field("capabilities")

    @admin.display(description="status")
    def status(self, obj):
        return obj.status


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = [
        "key_prefix",
        "name",
        "user",
        "kind",
        "device",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = [("device", admin.EmptyFieldListFilter), ("revoked_at", admin.EmptyFieldListFilter)]
    list_select_related = ["user", "device"]
    search_fields = ["id", "key_prefix", "name", "user__username", "user__email"]
    readonly_fields = ["id", "key_prefix", "user", "device", "created_at", "last_used_at", "revoked_at"]
    fields = ["id", "key_prefix", "name", "user", "device", "created_at", "expires_at", "last_used_at", "revoked_at"]
    actions = ["revoke_tokens"]

    def has_add_permission(self, request):
        return False  # tokens are minted with `manage.py create_token`, which shows the value once

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke_tokens(self, request, queryset):
        revoked = sum(services.token_revoke(token=token) for token in queryset)
        skipped = queryset.count() - revoked
        self.message_user(request, f"Revoked {revoked} token(s).", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"Skipped {skipped} token(s) already revoked.", messages.WARNING)


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(admin.ModelAdmin):
    list_display = ["key", "user", "response_status", "resource_id", "created_at"]
    list_select_related = ["user"]
    search_fields = ["key", "user__username", "user__email", "resource_id"]
    readonly_fields = [
        "id",
        "user",
        "key",
        "request_fingerprint",
        "response_status",
        "response_json_pretty",
        "resource_id",
        "created_at",
        "updated_at",
    ]
    exclude = ["response_body"]
    response_json_pretty = pretty_json_field("response_json")

    def has_add_permission(self, request):
        return False
