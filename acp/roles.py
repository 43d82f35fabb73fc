"""The support role: read everything ACP stores, run the cancel and revoke actions, add/change/delete nothing."""

from django.apps import apps
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import transaction

SUPPORT_GROUP = "support"
ACP_APP_LABELS = ("acp", "bindings", "commands", "acp_sessions")
# The admin actions support may run: (app_label, model, codename, name). Staff with the model's change
# permission may run them too; these let a view-only role do it without being able to edit rows.
ACTION_PERMISSIONS = [
    ("bindings", "syncsession", "cancel_syncsession", "Can cancel prepared push/pull sessions"),
    ("commands", "controlcommand", "cancel_controlcommand", "Can cancel pending control commands"),
    ("acp", "apitoken", "revoke_apitoken", "Can revoke API keys"),
    ("acp", "pairingtoken", "revoke_pairingtoken", "Can revoke pending pairing tokens"),
]


def acp_models():
    return [model for label in ACP_APP_LABELS for model in apps.get_app_config(label).get_models()]


@transaction.atomic
def support_group_sync() -> tuple[Group, bool]:
    """Make the support group hold exactly its permissions. Returns (group, created); safe to repeat."""
    group, created = Group.objects.get_or_create(name=SUPPORT_GROUP)
    content_types = ContentType.objects.get_for_models(*acp_models())
    wanted = [
        Permission.objects.get(content_type=content_type, codename=f"view_{model._meta.model_name}")
        for model, content_type in content_types.items()
    ]
    for app_label, model, codename, name in ACTION_PERMISSIONS:
        content_type = ContentType.objects.get_by_natural_key(app_label, model)
        permission, _ = Permission.objects.get_or_create(
            content_type=content_type, codename=codename, defaults={"name": name}
        )
        wanted.append(permission)
    group.permissions.set(wanted)
    return group, created
