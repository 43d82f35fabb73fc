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


class KeyScopes(BasePermission):
    """A key's scopes bound every endpoint: `read` for the safe methods, `write` for any other."""

    def has_permission(self, request, view):
        token = getattr(request, "auth", None)
        if token is None:
            return True  # an endpoint without authentication (the pairing exchange)
        needed = Scope.READ if request.method in SAFE_METHODS else Scope.WRITE
        if needed in token.scopes:
            return True
        self.message = f"This API key lacks the '{needed.value}' scope (it has: {', '.join(token.scopes) or 'none'})."
        return False
