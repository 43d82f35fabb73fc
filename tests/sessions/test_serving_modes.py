"""Both serving modes (ACP_SERVING, acp/serving/): the same protections, seen by Django's deploy checks and applied
by real servers, and the same answers from the ORM as from the fixed SQL."""

import os
import secrets
import subprocess
import sys

import httpx
import pytest
from django.conf import settings
from django.utils.module_loading import import_string

from acp import serving
from acp.models import ApiToken, Device
from acp.selectors import token_by_hash
from acp.services import token_hash
from acp.serving.handler import OptimisedASGIHandler
from acp.serving.middleware import INLINE
from tests.conftest import make_token
from tests.sessions.live import REPO_ROOT

PRODUCTION = {  # README, "Production"
    "DEBUG": "0",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "acp.example.com",
    "SECURE_SSL_REDIRECT": "1",
    "SESSION_COOKIE_SECURE": "1",
    "CSRF_COOKIE_SECURE": "1",
}


@pytest.mark.parametrize("mode", serving.MODES)
def test_check_deploy_is_clean(mode):
    environment = {**os.environ, **PRODUCTION, "ACP_SERVING": mode}
    check = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "no issues" in check.stdout


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", serving.MODES)
def test_a_server_applies_the_protections(processes, mode):
    server = processes.start_server(f"acp-protections-{mode}", ACP_SERVING=mode, DEBUG=0)
    with httpx.Client(base_url=server.url, follow_redirects=False, timeout=10) as browser:
        behind_tls = browser.get("/healthz", headers={"X-Forwarded-Proto": "https"})
        assert behind_tls.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
        assert "Strict-Transport-Security" not in browser.get("/healthz").headers  # plain HTTP: no HSTS

        login_page = browser.get("/admin/login/")
        assert login_page.status_code == 200
        assert login_page.headers["X-Frame-Options"] == "DENY"
        assert login_page.headers["X-Content-Type-Options"] == "nosniff"

        without_token = browser.post("/admin/login/", data={"username": "support", "password": "x"})
        assert without_token.status_code == 403


def middleware_classes(handler) -> list[type]:
    """The classes of the middleware a handler built, outermost first (each wrapped by Django's exception handling)."""
    classes, layer = [], handler._middleware_chain
    while True:
        layer = getattr(layer, "__wrapped__", layer)
        if not hasattr(layer, "get_response"):
            return classes
        classes.append(type(layer))
        layer = layer.get_response


def test_the_optimised_handler_loads_each_listed_stock_middleware_as_its_inline_subclass():
    listed = list(settings.MIDDLEWARE)
    optimised = middleware_classes(OptimisedASGIHandler())
    assert listed == settings.MIDDLEWARE  # what the deploy checks read is left as it was
    expected = [import_string(INLINE.get(path, path)) for path in listed]
    assert optimised == expected
    for stock, inline in INLINE.items():
        assert stock in listed and issubclass(import_string(inline), import_string(stock))


@pytest.mark.parametrize("mode", serving.MODES)
def test_the_token_lookup_reads_the_same_in_both_modes(settings, mode, user, django_assert_num_queries):
    device = Device.objects.create(user=user, name="laptop")
    raw = make_token(user, device=device)
    settings.ACP_SERVING = mode
    with django_assert_num_queries(1):
        found = token_by_hash(token_hash(raw))
        assert (found.user.username, found.device.name) == ("alice", "laptop")
    expected = ApiToken.objects.get(pk=found.pk)
    assert [getattr(found, f.attname) for f in ApiToken._meta.concrete_fields] == [
        getattr(expected, f.attname) for f in ApiToken._meta.concrete_fields
    ]
    assert token_by_hash("0" * 64) is None
