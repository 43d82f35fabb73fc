"""Pairing tokens and API keys in the support console: visible with scopes and status, revoked through the
services, never minted there."""

import pytest
from django.test import Client

from acp.models import ApiToken, Device, PairingToken
from acp.services import pairing_token_create, pairing_token_exchange, token_create
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


def test_support_sees_keys_and_pairing_tokens_but_cannot_mint(support_client, user):
    read_only = token_create(user=user, name="dash", scopes=["read"]).token
    pending = pairing_token_create(user=user, name="new laptop").pairing_token
    keys = support_client.get("/admin/acp/apitoken/")
    assert keys.status_code == 200 and read_only.key_prefix in keys.text
    assert '<td class="field-scope_list">read</td>' in keys.text
    tokens = support_client.get("/admin/acp/pairingtoken/")
    assert tokens.status_code == 200 and pending.token_prefix in tokens.text and "pending" in tokens.text
    assert support_client.get(f"/admin/acp/pairingtoken/{pending.pk}/change/").status_code == 200
    assert support_client.get("/admin/acp/apitoken/add/").status_code == 403
    assert support_client.get("/admin/acp/pairingtoken/add/").status_code == 403


def test_support_revokes_keys_and_pending_pairing_tokens(support_client, user):
    key = token_create(user=user, name="leaked").token
    response = support_client.post(
        "/admin/acp/apitoken/", {"action": "revoke_tokens", "_selected_action": [key.pk]}, follow=True
    )
    assert response.status_code == 200
    key.refresh_from_db()
    assert key.revoked_at is not None

    pending = pairing_token_create(user=user).pairing_token
    used_raw = pairing_token_create(user=user)
    pairing_token_exchange(raw=used_raw.raw, address="127.0.0.1", device_fields={"name": "d"})
    response = support_client.post(
        "/admin/acp/pairingtoken/",
        {"action": "revoke_pairing_tokens", "_selected_action": [pending.pk, used_raw.pairing_token.pk]},
        follow=True,
    )
    texts = [str(m) for m in response.context["messages"]]
    assert any("Revoked 1" in t for t in texts) and any("Skipped 1" in t for t in texts), texts
    statuses = dict(PairingToken.objects.values_list("pk", "status"))
    assert (statuses[pending.pk], statuses[used_raw.pairing_token.pk]) == ("revoked", "completed")


def test_deleting_a_device_in_the_admin_revokes_its_keys(user):
    device = Device.objects.create(user=user, name="old laptop")
    key = token_create(user=user, device=device).token
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    response = client.post(f"/admin/acp/device/{device.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and not Device.objects.filter(pk=device.pk).exists()
    key = ApiToken.objects.get(pk=key.pk)
    assert key.revoked_at is not None and key.kind == "device" and key.device_id is None
