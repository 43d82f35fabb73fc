"""Reads of the bindings app that are more than one line."""

from bindings.models import WorkspaceBinding


def binding_is_visible(*, user, binding_id, device_id=None) -> bool:
    """Whether `binding_id` is one of `user`'s bindings (and, for a device token, one of `device_id`'s)."""
    bindings = WorkspaceBinding.objects.filter(pk=binding_id, user=user)
    if device_id is not None:
        bindings = bindings.filter(device_id=device_id)
    return bindings.exists()
