"""Who may call what: user tokens do everything of their user; device tokens only daemon work."""

from rest_framework.permissions import SAFE_METHODS, BasePermission

from acp.choices import Scope


def token_device_id(request):
    """The device a device token is bound to, or None for a user token."""
    token = getattr(request, "auth", None)
    return getattr(token, "device_id", None)


class DeviceTokenScope(BasePermission):
    """A device token may only call the actions a view lists in `device_token_actions`.

    Which rows it sees is narrowed separately, by the view's queryset (`device_field`).
    """

    message = "A device token can only do its own device's daemon work; use a user token."

    def has_permission(self, request, view):
        if token_device_id(request) is None:
            return True
        return getattr(view, "action", None) in getattr(view, "device_token_actions", ())


def needed_scope(view, action, method: str) -> Scope:
    """`read` for the safe methods, `write` for any other, and for the actions a view lists in `write_actions`
    (a GET that acts: opening a machine's channel takes the machine's slot from its daemon)."""
    if method in SAFE_METHODS and action not in getattr(view, "write_actions", ()):
        return Scope.READ
    return Scope.WRITE


class KeyScopes(BasePermission):
    """A key's scopes bound every endpoint (`needed_scope`)."""

    def has_permission(self, request, view):
        token = getattr(request, "auth", None)
        if token is None:
            return True  # an endpoint without authentication (the pairing exchange)
        needed = needed_scope(view, getattr(view, "action", None), request.method)
        if needed in token.scopes:
            return True
        self.message = f"This API key lacks the '{needed.value}' scope (it has: {', '.join(token.scopes) or 'none'})."
        return False
