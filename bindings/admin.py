import uuid

from django.contrib import admin, messages
from django.db.models import Q
from django.forms.models import BaseInlineFormSet
from django.urls import reverse
from django.utils.html import format_html

from acp.admin_json import pretty_json_field
from acp.admin_permissions import CancelActionPermissionMixin
from acp.domain import InvalidTransition
from bindings import services
from bindings.choices import SyncSessionStatus
from bindings.models import SyncSession, WorkspaceBinding

INLINE_SESSIONS = 20


class RecentSessionsFormSet(BaseInlineFormSet):
    def get_queryset(self):
        # A binding can collect thousands of superseded sessions; the full list is one click away.
        if not hasattr(self, "_recent_sessions"):
            self._recent_sessions = list(super().get_queryset()[:INLINE_SESSIONS])
        return self._recent_sessions


class SyncSessionInline(admin.TabularInline):
    model = SyncSession
    formset = RecentSessionsFormSet
    fk_name = "workspace_binding"
    fields = ["id", "direction", "status", "plan_signature", "created_at", "updated_at"]
    readonly_fields = fields
    ordering = ["-created_at", "-id"]
    show_change_link = True
    extra = 0
    can_delete = False
    verbose_name_plural = f"push/pull sessions (newest {INLINE_SESSIONS})"

    def has_add_permission(self, request, obj=None):
        return False  # sessions are prepared through the API, which keeps the one-prepared invariant

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(WorkspaceBinding)
class WorkspaceBindingAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "user",
        "device",
        "environment",
        "project",
        "sync_mode",
        "execution_mode",
        "created_at",
        "updated_at",
    ]
    list_filter = ["sync_mode", "execution_mode", "created_at"]
    list_select_related = ["user", "device", "environment", "project"]
    search_fields = ["name", "local_path", "user__username", "user__email"]
    autocomplete_fields = ["user", "device", "environment", "project"]
    readonly_fields = ["id", "created_at", "updated_at", "all_sessions"]
    date_hierarchy = "created_at"
    inlines = [SyncSessionInline]

    def get_search_results(self, request, queryset, search_term):
        binding_id = _as_uuid(search_term)
        if binding_id is not None:
            return queryset.filter(Q(pk=binding_id) | Q(device_id=binding_id) | Q(environment_id=binding_id)), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="sessions")
    def all_sessions(self, obj):
        if obj.pk is None:
            return "—"
        url = reverse("admin:bindings_syncsession_changelist") + f"?workspace_binding__id__exact={obj.pk}"
        return format_html('<a href="{}">All push/pull sessions of this binding</a>', url)


@admin.register(SyncSession)
class SyncSessionAdmin(CancelActionPermissionMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "direction",
        "status",
        "short_signature",
        "workspace_binding",
        "user",
        "device",
        "created_at",
        "updated_at",
    ]
    list_filter = ["status", "direction", "created_at"]
    list_select_related = ["user", "device", "workspace_binding"]
    search_fields = ["plan_signature", "preview_signature", "result_signature", "user__username", "user__email"]
    date_hierarchy = "created_at"
    actions = ["cancel_prepared_sessions"]
    fields = [
        "id",
        "direction",
        "status",
        "user",
        "workspace_binding",
        "device",
        "environment",
        "project",
        "plan_signature",
        "plan_pretty",
        "metadata_pretty",
        "preview_signature",
        "preview_pretty",
        "result_signature",
        "result_pretty",
        "created_at",
        "updated_at",
    ]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False  # prepared through the API only

    def get_search_results(self, request, queryset, search_term):
        # A UUID is looked up by index (session, binding or device id) instead of a text scan of every id.
        term = _as_uuid(search_term)
        if term is not None:
            matches = Q(pk=term) | Q(workspace_binding_id=term) | Q(device_id=term) | Q(plan_signature=search_term)
            return queryset.filter(matches), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="plan signature", ordering="plan_signature")
    def short_signature(self, obj):
        signature = obj.plan_signature
        return signature if len(signature) <= 40 else signature[:39] + "…"

    plan_pretty = pretty_json_field("plan")
    metadata_pretty = pretty_json_field("metadata")
    preview_pretty = pretty_json_field("preview")
    result_pretty = pretty_json_field("result")

    @admin.action(description="Cancel selected prepared sessions", permissions=["cancel"])
    def cancel_prepared_sessions(self, request, queryset):
        cancelled, skipped = 0, []
        for session in queryset.select_related(None).only("id", "status"):
            try:
                changed = services.sync_session_cancel(session=session).changed
            except InvalidTransition:
                changed = False
            if changed:
                cancelled += 1
            else:
                skipped.append(session)
        self.message_user(request, f"Cancelled {cancelled} prepared session(s).", messages.SUCCESS)
        if skipped:
            by_status = {}
            for session in skipped:
                by_status[session.status] = by_status.get(session.status, 0) + 1
            summary = ", ".join(f"{count} {status}" for status, count in sorted(by_status.items()))
            self.message_user(
                request,
                f"Skipped {len(skipped)} session(s) that were not {SyncSessionStatus.PREPARED}: {summary}.",
                messages.WARNING,
            )


def _as_uuid(term: str):
    try:
        return uuid.UUID(term.strip())
    except (ValueError, AttributeError):
        return None
