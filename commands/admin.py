"""Support staff's view of threads, local sessions and control commands; status changes go through services."""

from django.contrib import admin, messages

from acp.admin_json import pretty_json_field
from acp.admin_permissions import CancelActionPermissionMixin
from commands import services
from commands.choices import SESSION_TERMINAL_STATES, SessionStatus
from commands.models import ControlCommand, LocalSession, Thread


class PrettyJsonMixin:
    """Read-only, indented renderings of the JSON fields (the raw fields are excluded from forms)."""

    metadata_pretty = pretty_json_field("metadata")
    payload_pretty = pretty_json_field("payload")
    result_pretty = pretty_json_field("result")


@admin.register(Thread)
class ThreadAdmin(PrettyJsonMixin, admin.ModelAdmin):
    list_display = ["__str__", "user", "environment", "status", "created_at", "updated_at"]
    list_filter = ["status"]
    list_select_related = ["user", "environment"]
    search_fields = ["id", "title", "user__username", "user__email"]
    autocomplete_fields = ["user"]
    raw_id_fields = ["environment"]
    readonly_fields = ["id", "status", "metadata_pretty", "created_at", "updated_at"]
    exclude = ["metadata"]
    date_hierarchy = "created_at"


class ControlCommandInline(PrettyJsonMixin, admin.TabularInline):
    model = ControlCommand
    fk_name = "session"
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ["-created_at"]
    fields = [
        "command_type",
        "status",
        "payload_pretty",
        "result_pretty",
        "created_at",
        "acknowledged_at",
        "completed_at",
    ]
    readonly_fields = [*fields]

    def has_add_permission(self, request, obj=None):
        return False  # commands are queued through the API, which checks the session's state


@admin.register(LocalSession)
class LocalSessionAdmin(PrettyJsonMixin, admin.ModelAdmin):
    list_display = ["id", "user", "thread", "device", "status", "paused_at", "last_heartbeat_at", "created_at"]
    list_filter = ["status", ("paused_at", admin.EmptyFieldListFilter)]
    list_select_related = ["user", "thread", "device"]
    search_fields = ["id", "thread__id", "thread__title", "device__name", "user__username", "user__email"]
    readonly_fields = [
        "id",
        "user",
        "thread",
        "device",
        "workspace_binding",
        "environment",
        "status",
        "error",
        "started_at",
        "last_heartbeat_at",
        "completed_at",
        "paused_at",
        "created_at",
        "updated_at",
        "metadata_pretty",
    ]
    exclude = ["metadata"]
    inlines = [ControlCommandInline]
    actions = ["cancel_sessions"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False  # sessions are created by the API (a daemon or a launch)

    @admin.action(description="End selected sessions as cancelled (their pending commands too)", permissions=["change"])
    def cancel_sessions(self, request, queryset):
        ended = skipped = 0
        for session in queryset:
            if session.status in SESSION_TERMINAL_STATES:
                skipped += 1
                continue
            services.local_session_complete(session=session, status=SessionStatus.CANCELLED)
            ended += 1
        self.message_user(request, f"Cancelled {ended} session(s).", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"Skipped {skipped} session(s) that had already ended.", messages.WARNING)


@admin.register(ControlCommand)
class ControlCommandAdmin(CancelActionPermissionMixin, PrettyJsonMixin, admin.ModelAdmin):
    list_display = ["id", "command_type", "status", "user", "session", "created_at", "acknowledged_at", "completed_at"]
    list_filter = ["command_type", "status"]
    list_select_related = ["user", "session", "thread"]
    search_fields = ["id", "session__id", "thread__id", "user__username", "user__email"]
    readonly_fields = [
        "id",
        "user",
        "session",
        "thread",
        "command_type",
        "status",
        "acknowledged_at",
        "completed_at",
        "created_at",
        "updated_at",
        "payload_pretty",
        "result_pretty",
    ]
    exclude = ["payload", "result"]
    actions = ["cancel_pending_commands"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False  # commands are queued through the API, which checks the session's state

    @admin.action(description="Cancel selected pending commands", permissions=["cancel"])
    def cancel_pending_commands(self, request, queryset):
        cancelled = sum(services.command_cancel(command=command).changed for command in queryset)
        skipped = len(queryset) - cancelled
        self.message_user(request, f"Cancelled {cancelled} pending command(s).", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"Skipped {skipped} command(s) that were not pending.", messages.WARNING)
