"""The production serving model (acp.asgi under uvicorn), end to end over HTTP.

Under ASGI the project runs Django's middleware hooks in the event loop (acp.serving.middleware.InlineHooks) and
lends each request a thread from a small pool (acp.serving.request_threads): the admin's session, CSRF and messages
must work as stock, and requests waiting in long-polls must not starve the others even with a single thread. The
servers run in the test run's ACP_SERVING mode, so with `stock` the same must hold of Django's own serving.
"""

import asyncio
import re
import time

import httpx
import pytest
from django.utils import timezone

from acp.models import Device
from tests.conftest import make_token, make_user
from tests.sessions.live import until_waiters


@pytest.mark.django_db(transaction=True)
def test_admin_sign_in_and_out_keep_their_session_and_csrf_under_asgi(processes):
    make_user("support", password="a-long-passphrase", is_staff=True, is_superuser=True)
    # Plain HTTP on loopback: the cookies must not be Secure-only for the client to send them back.
    server = processes.start_server("acp-asgi-admin", SESSION_COOKIE_SECURE=0, CSRF_COOKIE_SECURE=0)
    with httpx.Client(base_url=server.url, follow_redirects=False, timeout=10) as browser:
        login_page = browser.get("/admin/login/?next=/admin/")
        assert login_page.status_code == 200
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text).group(1)

        refused = browser.post("/admin/login/?next=/admin/", data={"username": "support", "password": "x"})
        assert refused.status_code == 403  # no CSRF token: refused before the password is even looked at

        signed_in = browser.post(
            "/admin/login/?next=/admin/",
            data={"csrfmiddlewaretoken": csrf, "username": "support", "password": "a-long-passphrase"},
            headers={"Referer": f"{server.url}/admin/login/"},
        )
        assert signed_in.status_code == 302, signed_in.text[:500]
        assert "sessionid" in browser.cookies

        dashboard = browser.get("/admin/")
        assert dashboard.status_code == 200
        assert "support" in dashboard.text and "Log out" in dashboard.text

        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', dashboard.text).group(1)
        signed_out = browser.post("/admin/logout/", data={"csrfmiddlewaretoken": csrf}, headers={"Referer": server.url})
        assert signed_out.status_code == 200
        assert browser.get("/admin/").status_code == 302  # back to the login page


@pytest.mark.django_db(transaction=True)
def test_the_admin_lockout_page_is_served_under_asgi(processes):
    make_user("support", password="a-long-passphrase", is_staff=True)
    server = processes.start_server(
        "acp-asgi-lockout", ACP_ADMIN_LOGIN_FAILURE_LIMIT=3, SESSION_COOKIE_SECURE=0, CSRF_COOKIE_SECURE=0
    )
    with httpx.Client(base_url=server.url, follow_redirects=False, timeout=10) as browser:
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', browser.get("/admin/login/").text).group(1)

        def sign_in(password):
            return browser.post(
                "/admin/login/?next=/admin/",
                data={"csrfmiddlewaretoken": csrf, "username": "support", "password": password},
                headers={"Referer": f"{server.url}/admin/login/"},
            )

        assert [sign_in("wrong").status_code for _ in range(3)] == [200, 200, 429]
        locked = sign_in("a-long-passphrase")
        assert locked.status_code == 429 and "Too many failed sign-ins" in locked.text
    assert "Traceback" not in server.log()


@pytest.mark.django_db(transaction=True)
def test_waiting_long_polls_do_not_starve_other_requests_even_with_one_thread(processes):
    user = make_user("daemons")
    machines = [Device.objects.create(user=user, name=f"m{i}", last_seen_at=timezone.now()) for i in range(20)]
    token = make_token(user)
    server = processes.start_server("acp-asgi-starve", ACP_REQUEST_THREADS=1)
    headers = {"Authorization": f"Bearer {token}"}

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as client:
            polls = [
                asyncio.create_task(client.get(f"/api/v1/machines/{machine.pk}/launches", params={"wait": 6}))
                for machine in machines
            ]
            await until_waiters(server.url, len(machines))
            assert not any(poll.done() for poll in polls)
            started = time.monotonic()
            meanwhile = [await client.get("/v1/projects") for _ in range(5)]
            took = time.monotonic() - started
            answers = await asyncio.gather(*polls)
            return meanwhile, took, answers

    meanwhile, took, answers = asyncio.run(scenario())
    assert [response.status_code for response in meanwhile] == [200] * 5
    assert took < 2, f"5 requests behind 20 waiting long-polls took {took:.1f}s"
    assert [answer.status_code for answer in answers] == [200] * 20
    assert all(answer.json()["data"] == [] for answer in answers)
