"""Failed sign-ins to the support console are throttled (django-axes), through the real login form."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from tests.conftest import make_client, make_token, make_user

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/admin/"
PASSWORD = "correct horse battery staple"
ATTACKER = "203.0.113.7"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def staff():
    return make_user("support", is_staff=True, password=PASSWORD)


@pytest.fixture
def colleague():
    return make_user("colleague", is_staff=True, password=PASSWORD)


def sign_in(username, password, address=ATTACKER, client=None):
    client = client or Client(REMOTE_ADDR=address)
    return client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"})


def signed_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


def lock_out(username, address=ATTACKER):
    for _ in range(10):
        response = sign_in(username, "wrong", address)
    return response


def test_ten_wrong_passwords_lock_the_account_out_with_a_page(staff, settings):
    for attempt in range(9):
        response = sign_in("support", "wrong")
        assert response.status_code == 200 and b"Please enter the correct username" in response.content, attempt

    response = sign_in("support", "wrong")
    assert response.status_code == 429
    assert response["Content-Type"].startswith("text/html")
    assert b"Too many failed sign-ins" in response.content and b"Traceback" not in response.content

    response = sign_in("support", PASSWORD)
    assert response.status_code == 429 and not signed_in(response)
    # ...from any other address as well: the username is locked
    assert sign_in("support", PASSWORD, "198.51.100.1").status_code == 429


def test_other_users_are_unaffected(staff, colleague):
    lock_out("support")
    assert signed_in(sign_in("colleague", PASSWORD, "198.51.100.1"))


def test_the_address_is_locked_too(staff, colleague):
    for index in range(10):  # ten different usernames from one address
        sign_in(f"guess{index}", "wrong")
    assert sign_in("colleague", PASSWORD).status_code == 429
    assert signed_in(sign_in("colleague", PASSWORD, "198.51.100.1"))


def test_the_lockout_ends_by_itself(staff, settings):
    lock_out("support")
    assert sign_in("support", PASSWORD).status_code == 429
    # The cool-off passes: the failures that caused it are older than ACP_ADMIN_LOCKOUT_MINUTES (15 by default).
    AccessAttempt.objects.update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))
    assert signed_in(sign_in("support", PASSWORD))


def test_staff_see_the_attempts_in_the_admin(staff):
    lock_out("support")
    root = Client()
    root.force_login(make_user("root", is_staff=True, is_superuser=True))
    index = root.get("/admin/")
    assert b"/admin/axes/accessattempt/" in index.content
    page = root.get("/admin/axes/accessattempt/")
    assert page.status_code == 200
    assert b"support" in page.content and ATTACKER.encode() in page.content


def test_x_forwarded_for_counts_only_behind_configured_proxies(staff, settings):
    # By default the header is the client's to write: ignored, the connection's address is used.
    for index in range(10):
        sign_in(
            f"guess{index}", "wrong", client=Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=f"192.0.2.{index}")
        )
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"10.0.0.1"}

    AccessAttempt.objects.all().delete()
    settings.ACP_PROXY_COUNT = 1
    sign_in("support", "wrong", client=Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="spoofed, 192.0.2.50"))
    assert list(AccessAttempt.objects.values_list("ip_address", flat=True)) == ["192.0.2.50"]


def test_api_tokens_are_not_counted(staff):
    lock_out("support")
    api = make_client(make_token(get_user_model().objects.get(username="support")))
    for _ in range(3):
        assert api.get("/v1/projects").status_code == 200
    assert make_client("acp_wrong").get("/v1/projects").status_code == 401
    assert AccessAttempt.objects.get().failures_since_start == 10
