import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command

from acp.roles import acp_models

pytestmark = pytest.mark.django_db


def support_codenames():
    return set(Group.objects.get(name="support").permissions.values_list("codename", flat=True))


def test_setup_roles_is_idempotent_and_read_only():
    call_command("setup_roles")
    first = support_codenames()
    call_command("setup_roles")
    assert support_codenames() == first
    assert Group.objects.filter(name="support").count() == 1
    for model in acp_models():
        assert f"view_{model._meta.model_name}" in first
    assert {"cancel_syncsession", "cancel_controlcommand"} <= first
    assert not [c for c in first if c.startswith(("add_", "change_", "delete_"))]


def test_setup_roles_removes_permissions_added_by_hand():
    from django.contrib.auth.models import Permission

    call_command("setup_roles")
    group = Group.objects.get(name="support")
    group.permissions.add(Permission.objects.get(codename="delete_syncsession"))
    call_command("setup_roles")
    assert "delete_syncsession" not in support_codenames()
