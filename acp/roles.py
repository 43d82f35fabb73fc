"""The support role: read everything ACP stores, run the cancel actions, add/change/delete nothing."""

from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import transaction

from acp.composition import acp_app_configs

SUPPORT_GROUP = "support"


def acp_app_labels() -> tuple[str, ...]:
    return tuple(config.label for config in acp_app_configs())


def acp_models():
    return [model for config in acp_app_configs() for model in config.get_models()]


def action_permissions() -> list[tuple[str, str, str, str]]:
    """The admin actions support may run, `(app_label, model, codename, name)` each, as the apps declare them.
    Staff with the model's change permission may run them too; these let a view-only role do it without being
    able to edit rows."""
    return [(config.label, *action) for config in acp_app_configs() for action in config.support_actions]


@transaction.atomic
def support_group_sync() -> tuple[Group, bool]:
    """Make the support group hold exactly its permissions. Returns (group, created); safe to repeat."""
    group, created = Group.objects.get_or_create(name=SUPPORT_GROUP)
    content_types = ContentType.objects.get_for_models(*acp_models())
    wanted = [
        Permission.objects.get(content_type=content_type, codename=f"view_{model._meta.model_name}")
        for model, content_type in content_types.items()
    ]
    for app_label, model, codename, name in action_permissions():
        content_type = ContentType.objects.get_by_natural_key(app_label, model)
        permission, _ = Permission.objects.get_or_create(
            content_type=content_type, codename=codename, defaults={"name": name}
        )
        wanted.append(permission)
    group.permissions.set(wanted)
    return group, created
