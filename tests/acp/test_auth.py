from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from acp.models import ApiToken, Device
from acp.selectors import token_by_hash
from acp.services import token_create, token_hash, token_revoke
from tests.conftest import make_client, make_token, make_user

pytestmark = pytest.mark.django_db


def assert_unauthorized(response):
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    body = response.json()
    assert body["code"] == "unauthorized"
    assert set(body) == {"error", "code", "details"}


def test_missing_token_is_401(anon):
    assert_unauthorized(anon.get("/v1/projects"))


def test_unknown_token_is_401(db):
    assert_unauthorized(make_client("acp_not-a-real-token").get("/v1/projects"))


def test_token_without_prefix_is_401(db):
    assert_unauthorized(make_client("something-else").get("/v1/projects"))


def test_malformed_authorization_header_is_401(user):
    client = make_client()
    client.credentials(HTTP_AUTHORIZATION="Bearer two parts")
    assert_unauthorized(client.get("/v1/projects"))


def test_expired_token_is_401(user):
    issued = token_create(user=user, expires_in=timedelta(days=1))
    ApiToken.objects.filter(pk=issued.token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert_unauthorized(make_client(issued.raw).get("/v1/projects"))


def test_revoked_token_is_401(user):
    issued = token_create(user=user)
    assert make_client(issued.raw).get("/v1/projects").status_code == 200
    token_revoke(token=issued.token)
    assert_unauthorized(make_client(issued.raw).get("/v1/projects"))


def test_inactive_user_token_is_401(user):
    raw = make_token(user)
    user.is_active = False
    user.save()
    assert_unauthorized(make_client(raw).get("/v1/projects"))


def test_valid_token_records_last_used_at(user):
    issued = token_create(user=user)
    assert issued.token.last_used_at is None
    assert make_client(issued.raw).get("/v1/projects").status_code == 200
    issued.token.refresh_from_db()
    assert issued.token.last_used_at is not None


def test_database_holds_no_usable_token(user):
    issued = token_create(user=user, name="dump check")
    assert issued.raw.startswith("acp_")
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM acp_apitoken")
        dump = repr(cursor.fetchall())
    assert issued.raw not in dump
    assert issued.raw[4:] not in dump
    stored = ApiToken.objects.get(pk=issued.token.pk)
    # The stored hash cannot itself be used as a token.
    assert_unauthorized(make_client(stored.key_hash).get("/v1/projects"))
    assert_unauthorized(make_client("acp_" + stored.key_hash).get("/v1/projects"))


def test_device_token_is_refused_outside_its_device(user, device, device_api, other_device):
    assert device_api.get(f"/v1/devices/{device.id}").status_code == 200
    assert device_api.post(f"/v1/devices/{device.id}/heartbeat", {}, format="json").status_code == 200
    # Another device of the same user is invisible to it.
    sibling = type(device).objects.create(user=user, name="desktop")
    assert device_api.get(f"/v1/devices/{sibling.id}").status_code == 404
    assert device_api.post(f"/v1/devices/{sibling.id}/heartbeat", {}, format="json").status_code == 404
    listed = device_api.get("/v1/devices").json()
    assert [d["id"] for d in listed["data"]] == [str(device.id)]
    # Work that is not its device's daemon work is refused.
    response = device_api.get("/v1/projects")
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert device_api.patch(f"/v1/devices/{device.id}", {"name": "x"}, format="json").status_code == 403
    assert device_api.delete(f"/v1/devices/{device.id}").status_code == 403


def test_create_token_command_prints_token_alone_on_last_line(user, capsys):
    call_command("create_token", user.username, "--name", "cli", "--expires-in", "7")
    out = capsys.readouterr().out.strip().splitlines()
    raw = out[-1]
    assert raw.startswith("acp_") and " " not in raw
    assert make_client(raw).get("/v1/projects").status_code == 200
    token = ApiToken.objects.get(name="cli")
    assert token.expires_at is not None and token.device is None


def test_create_token_command_for_a_device(user, device, capsys):
    call_command("create_token", user.username, "--device", str(device.id))
    raw = capsys.readouterr().out.strip().splitlines()[-1]
    assert ApiToken.objects.get(device=device).kind == "device"
    assert make_client(raw).get("/v1/projects").status_code == 403
    assert make_client(raw).get(f"/v1/devices/{device.id}").status_code == 200


@pytest.mark.parametrize("args", [["nobody"], ["alice", "--device", "not-a-uuid"], ["alice", "--expires-in", "0"]])
def test_create_token_command_refuses_bad_arguments(user, args):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("create_token", *args)


def test_create_token_command_refuses_another_users_device(user, other_device):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("create_token", user.username, "--device", str(other_device.id))


def _field_values(instance):
    return {field.attname: getattr(instance, field.attname) for field in type(instance)._meta.concrete_fields}


@pytest.mark.django_db
@pytest.mark.parametrize("with_device", [False, True])
def test_token_by_hash_reads_what_the_orm_reads(with_device):
    """The hand-built join of the authentication hot path gives the same token, user and device as the ORM."""
    user = make_user(first_name="Ada")
    device = Device.objects.create(user=user, name="laptop", capabilities={"pty": True}) if with_device else None
    raw = make_token(user, device=device, expires_in=timedelta(days=1))
    expected = ApiToken.objects.select_related("user", "device").get(key_hash=token_hash(raw))

    token = token_by_hash(token_hash(raw))

    assert _field_values(token) == _field_values(expected)
    assert _field_values(token.user) == _field_values(expected.user)
    if with_device:
        assert _field_values(token.device) == _field_values(expected.device)
        assert token.device.capabilities == {"pty": True}
    else:
        assert token.device is None
    assert token_by_hash(token_hash(raw + "x")) is None
