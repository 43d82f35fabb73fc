from django.contrib import admin, messages

from acp.admin import OwnedAdmin
from acp.admin_json import pretty_json_field
from commands.admin import timeline_link
from sessions import services
from sessions.models import Launch, Workspace


@admin.register(Workspace)
class WorkspaceAdmin(OwnedAdmin):
    list_display = ["name", "user", "project", "default_machine", "created_at", "updated_at"]
    list_select_related = ["user", "project", "default_machine"]
    autocomplete_fields = ["user", "project", "default_machine"]


@admin.register(Launch)
class LaunchAdmin(admin.ModelAdmin):
    list_display = ["id", "user", "workspace", "machine", "status", "error_code", "created_at", "acknowledged_at"]
    list_filter = ["status", "ack_status", "error_code"]
    list_select_related = ["user", "workspace", "machine"]
    search_fields = ["=id", "=workspace__id", "=machine__id", "=thread__id", "user__username", "user__email"]
    date_hierarchy = "created_at"
    actions = ["mark_timed_out"]
    session_settings_pretty = pretty_json_field("session_settings")
    metadata_pretty = pretty_json_field("metadata")
    ack_payload_pretty = pretty_json_field("ack_payload")
    # Support reads launches; only the handshake (and the action below) changes them.
    readonly_fields = [
        "initial_prompt",
        "worktree_name",
        "session_settings_pretty",
        "resume_session_id",
        "agent_session_id",
        "metadata_pretty",
        "id",
        "user",
        "workspace",
        "machine",
        "user_session",
        "status",
        "error_code",
        "ack_status",
        "ack_payload_pretty",
        "thread",
        "local_session",
        "timeline",
        "expires_at",
        "acknowledged_at",
        "timed_out_at",
        "created_at",
        "updated_at",
    ]
    fieldsets = [
        (None, {"fields": ["id", "user", "workspace", "machine", "status", "error_code"]}),
        (
            "Request",
            {
                "fields": [
                    "user_session",
                    "initial_prompt",
                    "worktree_name",
                    "session_settings_pretty",
                    "resume_session_id",
                    "agent_session_id",
                    "metadata_pretty",
                ]
            },
        ),
        (
            "Outcome",
            {
                "fields": [
                    "ack_status",
                    "ack_payload_pretty",
                    "thread",
                    "local_session",
                    "timeline",
                    "expires_at",
                    "acknowledged_at",
                    "timed_out_at",
                    "created_at",
                    "updated_at",
                ]
            },
        ),
    ]

    def has_add_permission(self, request):
        return False  # launches come from the API, which hands them to a daemon

    @admin.display(description="timeline")
    def timeline(self, obj):
        thread_id = obj.thread_id or obj.user_session_id
        if thread_id is None:
            return "—"  # no thread: the launch failed before one was created
        return timeline_link("the thread's timeline", thread__id__exact=thread_id)

    def has_delete_permission(self, request, obj=None):
        return False  # launches are the record of what was asked and what happened

    @admin.action(description="Mark selected stuck launches timed out", permissions=["change"])
    def mark_timed_out(self, request, queryset):
        launch_ids = list(queryset.values_list("pk", flat=True))
        timed_out = sum(services.launch_time_out(launch_id=launch_id).changed for launch_id in launch_ids)
        skipped = len(launch_ids) - timed_out
        if timed_out:
            self.message_user(request, f"Marked {timed_out} launch(es) timed out.", messages.SUCCESS)
        if skipped:
            self.message_user(
                request, f"Skipped {skipped} launch(es) that were not pending (already answered).", messages.WARNING
            )
