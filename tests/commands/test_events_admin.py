"""Support reads a thread's timeline in the admin: linked from the thread, session and launch pages."""

import re

import pytest
from django.test import Client
from django.urls import reverse

from commands.services import NewEvent, thread_events_append
from sessions.services import launch_acknowledge
from tests.conftest import make_user
from tests.sessions.conftest import make_launch, workspace  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db

TIMELINE = reverse("admin:commands_threadevent_changelist")


def listed_types(response) -> list[str]:
    """The type column of the changelist's rows, in order."""
    return re.findall(r'<td class="field-type">([^<]*)</td>', response.content.decode())


@pytest.fixture
def staff_client():
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def launched(workspace):  # noqa: F811
    launch = launch_acknowledge(launch=make_launch(workspace), status="ok", payload={}).obj
    thread_events_append(
        thread_id=launch.thread_id,
        events=[NewEvent("output", {"line": "<b>compiling</b>"}, source="daemon", session_id=launch.local_session_id)],
    )
    return launch


def test_the_thread_page_links_to_its_timeline_oldest_first(staff_client, launched, django_assert_max_num_queries):
    page = staff_client.get(reverse("admin:commands_thread_change", args=[launched.thread_id])).content.decode()
    link = f"{TIMELINE}?thread__id__exact={launched.thread_id}"
    assert link in page and "4 event(s)" in page

    with django_assert_max_num_queries(12):
        timeline = staff_client.get(link)
    assert timeline.status_code == 200
    html = timeline.content.decode()
    assert listed_types(timeline) == ["launch.requested", "session.created", "launch.acknowledged", "output"]
    assert "&lt;b&gt;compiling&lt;/b&gt;" in html and "<b>compiling</b>" not in html  # data escaped, pretty-printed
    assert "daemon" in html and "server" in html


def test_filtering_by_type_and_session_and_the_other_pages_links(staff_client, launched):
    only_output = staff_client.get(TIMELINE, {"thread__id__exact": launched.thread_id, "type": "output"})
    assert only_output.status_code == 200 and listed_types(only_output) == ["output"]
    session_page = staff_client.get(reverse("admin:commands_localsession_change", args=[launched.local_session_id]))
    assert f"session__id__exact={launched.local_session_id}" in session_page.content.decode()
    mine = staff_client.get(TIMELINE, {"session__id__exact": launched.local_session_id})
    assert listed_types(mine) == ["session.created", "launch.acknowledged", "output"]
    launch_page = staff_client.get(reverse("admin:acp_sessions_launch_change", args=[launched.pk]))
    assert f"thread__id__exact={launched.thread_id}" in launch_page.content.decode()


def test_the_timeline_is_read_only(staff_client, launched):
    assert staff_client.get(reverse("admin:commands_threadevent_add")).status_code == 403
