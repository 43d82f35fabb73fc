class CancelActionPermissionMixin:
    """Lets `permissions=["cancel"]` admin actions run for staff who may change the model, or who hold
    `<app_label>.cancel_<model>` (the read-only support role, see acp/roles.py)."""

    def has_cancel_permission(self, request):
        opts = self.opts
        return self.has_change_permission(request) or request.user.has_perm(
            f"{opts.app_label}.cancel_{opts.model_name}"
        )
