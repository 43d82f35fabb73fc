from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin

from acp import domain, services
from acp.admin_json import pretty_json_field
from acp.models import ApiToken, Device, Environment, IdempotencyKey, PairingToken, Project, User

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
    readonly_fields = [
        *OwnedAdmin.readonly_fields, "last_seen_at", "status", "channel_id", "channel_opened_at", "capabilities_pretty"
    ]  # fmt: skip
    exclude = ["capabilities"]
    capabilities_pretty = pretty_json_field("capabilities")

    @admin.display(description="status")
    def status(self, obj):
        return obj.status

    def delete_model(self, request, obj):
        services.device_delete(device=obj)  # revokes the device's keys first

    def delete_queryset(self, request, queryset):
        for device in queryset:
            services.device_delete(device=device)


class RevokeActionPermissionMixin:
    """`permissions=["revoke"]` actions run for staff who may change the model, or who hold
    `<app_label>.revoke_<model>` (the support role, acp/roles.py): a leaked key is stopped without editing rows."""

    def has_revoke_permission(self, request):
        opts = self.opts
        return self.has_change_permission(request) or request.user.has_perm(
            f"{opts.app_label}.revoke_{opts.model_name}"
        )


@admin.register(ApiToken)
class ApiTokenAdmin(RevokeActionPermissionMixin, admin.ModelAdmin):
    list_display = [
        "key_prefix",
        "name",
        "user",
        "kind",
        "scope_list",
        "device",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["kind", ("revoked_at", admin.EmptyFieldListFilter), ("expires_at", admin.EmptyFieldListFilter)]
    list_select_related = ["user", "device"]
    search_fields = ["id", "key_prefix", "name", "user__username", "user__email"]
    readonly_fields = [
        "id", "key_prefix", "user", "kind", "scopes", "device", "pairing_token", "created_at", "last_used_at",
        "revoked_at",
    ]  # fmt: skip
    fields = [
        "id", "key_prefix", "name", "user", "kind", "scopes", "device", "pairing_token", "created_at", "expires_at",
        "last_used_at", "revoked_at",
    ]  # fmt: skip
    actions = ["revoke_tokens"]

    @admin.display(description="scopes")
    def scope_list(self, obj):
        return ", ".join(obj.scopes)

    def has_add_permission(self, request):
        return False  # keys are minted by their owner (POST /v1/api-keys, pairing) or `manage.py create_token`

    @admin.action(description="Revoke selected tokens", permissions=["revoke"])
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


@admin.register(PairingToken)
class PairingTokenAdmin(RevokeActionPermissionMixin, admin.ModelAdmin):
    list_display = [
        "token_prefix",
        "name",
        "user",
        "current_status",
        "device",
        "expires_at",
        "completed_at",
        "created_at",
    ]
    list_filter = ["status"]
    list_select_related = ["user", "device"]
    search_fields = ["id", "token_prefix", "name", "user__username", "user__email", "device__name"]
    readonly_fields = [
        "id", "token_prefix", "name", "user", "current_status", "device", "expires_at", "completed_at", "created_at",
        "updated_at",
    ]  # fmt: skip
    fields = readonly_fields
    date_hierarchy = "created_at"
    actions = ["revoke_pairing_tokens"]

    def has_add_permission(self, request):
        return False  # minted by their owner (POST /v1/local-runner-pairing-tokens): the value is shown once

    def has_change_permission(self, request, obj=None):
        return False  # statuses move only through the revoke action and the exchange

    @admin.display(description="status")
    def current_status(self, obj):
        return obj.current_status()

    @admin.action(description="Revoke selected pending pairing tokens", permissions=["revoke"])
    def revoke_pairing_tokens(self, request, queryset):
        revoked = skipped = 0
        for pairing_token in queryset:
            try:
                revoked += services.pairing_token_revoke(pairing_token=pairing_token).changed
            except domain.InvalidTransition:
                skipped += 1
        self.message_user(request, f"Revoked {revoked} pairing token(s).", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"Skipped {skipped} already exchanged (revoke their keys).", messages.WARNING)
