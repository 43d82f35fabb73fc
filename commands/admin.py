"""Support staff's view of threads, local sessions and control commands; status changes go through services."""

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from acp.admin_json import pretty_json, pretty_json_field
from acp.admin_permissions import CancelActionPermissionMixin
from commands import services
from commands.choices import SESSION_TERMINAL_STATES, SessionStatus
from commands.models import ControlCommand, LocalSession, Thread, ThreadEvent


def timeline_link(label: str, **filters) -> str:
    """A link to the timeline (the thread events' changelist) filtered by `filters`, e.g. thread__id__exact."""
    query = "&".join(f"{key}={value}" for key, value in filters.items())
    return format_html('<a href="{}?{}">{}</a>', reverse("admin:commands_threadevent_changelist"), query, label)


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
    readonly_fields = ["id", "status", "timeline", "metadata_pretty", "created_at", "updated_at"]
    exclude = ["metadata"]
    date_hierarchy = "created_at"

    @admin.display(description="timeline")
    def timeline(self, obj):
        return timeline_link(f"{obj.last_event_sequence} event(s), oldest first", thread__id__exact=obj.pk)


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
        "timeline",
    ]
    exclude = ["metadata"]
    inlines = [ControlCommandInline]
    actions = ["cancel_sessions"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False  # sessions are created by the API (a daemon or a launch)

    @admin.display(description="timeline")
    def timeline(self, obj):
        return format_html(
            "{} · {}",
            timeline_link("this session's events", session__id__exact=obj.pk),
            timeline_link("the whole thread", thread__id__exact=obj.thread_id),
        )

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


@admin.register(ThreadEvent)
class ThreadEventAdmin(admin.ModelAdmin):
    """A thread's timeline, read-only: open it filtered by thread (the thread's page links here), oldest first."""

    list_display = ["sequence", "type", "source", "created_at", "occurred_at", "session_id", "data_pretty", "thread"]
    list_display_links = ["sequence"]
    list_filter = ["source", "type"]
    list_select_related = ["thread"]
    search_fields = ["=thread__id", "=session__id", "=client_event_id", "type"]
    ordering = ["thread", "sequence"]
    list_per_page = 100
    show_full_result_count = False
    fields = ["id", "thread", "session", "sequence", "type", "source", "client_event_id", "occurred_at",
              "created_at", "data_pretty"]  # fmt: skip
    readonly_fields = fields

    @admin.display(description="data")
    def data_pretty(self, obj):
        return pretty_json(obj.data)

    def has_add_permission(self, request):
        return False  # events are appended by the services and the ingest API, in order

    def has_change_permission(self, request, obj=None):
        return False  # the timeline is a record

    def has_delete_permission(self, request, obj=None):
        return False  # retention removes whole timelines (cleanup_sessions)
