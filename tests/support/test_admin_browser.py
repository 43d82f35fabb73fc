"""A real browser (Debian's Chromium, headless, driven by Playwright) walks the support console."""

import os
import shutil
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.utils import timezone

from acp.models import Device, Environment
from bindings.models import SyncSession, WorkspaceBinding
from tests.conftest import make_user

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = os.environ.get("ACP_CHROMIUM", "/usr/bin/chromium")
OUTPUT_DIR = Path(__file__).resolve().parents[2] / "test-output" / "browser"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium package (.ci/run does).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        yield page
        browser.close()


def seed_sessions():
    owner = make_user("carol")
    device = Device.objects.create(user=owner, name="carol-laptop", last_seen_at=timezone.now())
    environment = Environment.objects.create(user=owner, name="carol-env")
    binding = WorkspaceBinding.objects.create(user=owner, device=device, environment=environment, local_path="/src")
    common = {"user": owner, "workspace_binding": binding, "device": device, "environment": environment}
    SyncSession.objects.create(**common, direction="push", status="superseded", plan_signature="sig-old-1")
    SyncSession.objects.create(**common, direction="push", status="superseded", plan_signature="sig-needle-42")
    return SyncSession.objects.create(**common, direction="push", status="prepared", plan_signature="sig-current")


def shot(page, name):
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUTPUT_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000
    return path


@pytest.fixture
def console_data():
    """Everything the browser will see, made before Playwright's event loop starts (the ORM is sync-only)."""
    call_command("setup_roles")
    support = make_user("sam", is_staff=True, password="a-long-support-password")
    support.groups.add(Group.objects.get(name="support"))
    return seed_sessions()


def test_support_user_walks_the_push_session_console(live_server, console_data, browser_page):
    prepared = console_data
    page = browser_page

    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    shot(page, "01-login")
    page.fill("#id_username", "sam")
    page.fill("#id_password", "a-long-support-password")
    page.click("input[type=submit]")
    page.wait_for_selector("#acp-dashboard")
    assert page.inner_text("[data-count=superseded_sessions]") == "2"
    assert page.inner_text("[data-count=prepared_sessions]") == "1"
    shot(page, "02-dashboard")

    page.goto(f"{live_server.url}/admin/bindings/syncsession/")
    assert page.locator("#result_list tbody tr").count() == 3
    shot(page, "03-push-sessions")

    page.click("#changelist-filter a[href*='status__exact=superseded']")
    page.wait_for_url("**status__exact=superseded**")
    assert page.locator("#result_list tbody tr").count() == 2
    shot(page, "04-filtered-superseded")

    page.fill("#searchbar", "sig-needle-42")
    page.press("#searchbar", "Enter")
    page.wait_for_url("**q=sig-needle-42**")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    shot(page, "05-search-signature")

    page.goto(f"{live_server.url}/admin/bindings/syncsession/{prepared.pk}/change/")
    body = page.inner_text("#content")
    assert "sig-current" in body
    # Support views; it cannot save changes.
    assert page.locator("input[name=_save]").count() == 0
    shot(page, "06-session-detail")
