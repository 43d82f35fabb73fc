"""Fixtures of the support console's tests."""

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client

from tests.conftest import make_user


@pytest.fixture
def support_client(db):
    """A staff member of the `support` group (as `setup_roles` makes it), signed in to the admin."""
    call_command("setup_roles")
    support = make_user("sam", is_staff=True)
    support.groups.add(Group.objects.get(name="support"))
    client = Client()
    client.force_login(support)
    return client
