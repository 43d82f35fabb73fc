"""Support staff's view of bindings and push/pull sessions in the Django admin."""

import json

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from bindings.models import SyncSession, WorkspaceBinding
from tests.bindings.test_services import make_session

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:bindings_syncsession_changelist")


@pytest.fixture
def sessions(binding):
    """Three push sessions (two superseded, one prepared) and a cancelled pull session."""
    rows = [make_session(binding, signature=f"push-{i}", status="superseded") for i in range(2)]
    rows.append(make_session(binding, signature="push-live", plan={"files": ["a.py"], "note": "<b>x</b>"}))
    rows.append(make_session(binding, direction="pull", signature="pull-gone", status="cancelled"))
    return rows


def listed_ids(response):
    return {str(obj.pk) for obj in response.context["cl"].result_list}


def test_changelist_filters_by_status_and_direction(admin_client, sessions):
    prepared = admin_client.get(CHANGELIST, {"status__exact": "prepared"})
    assert prepared.status_code == 200
    assert listed_ids(prepared) == {str(sessions[2].pk)}
    pulls = admin_client.get(CHANGELIST, {"direction__exact": "pull"})
    assert listed_ids(pulls) == {str(sessions[3].pk)}
    superseded_push = admin_client.get(CHANGELIST, {"direction__exact": "push", "status__exact": "superseded"})
    assert listed_ids(superseded_push) == {str(sessions[0].pk), str(sessions[1].pk)}


def test_changelist_searches_by_id_and_signature(admin_client, sessions, binding):
    by_id = admin_client.get(CHANGELIST, {"q": str(sessions[1].pk)})
    assert listed_ids(by_id) == {str(sessions[1].pk)}
    by_binding = admin_client.get(CHANGELIST, {"q": str(binding.pk)})
    assert listed_ids(by_binding) == {str(s.pk) for s in sessions}
    by_signature = admin_client.get(CHANGELIST, {"q": "push-live"})
    assert listed_ids(by_signature) == {str(sessions[2].pk)}
    partial = admin_client.get(CHANGELIST, {"q": "pull-"})
    assert listed_ids(partial) == {str(sessions[3].pk)}
    by_owner = admin_client.get(CHANGELIST, {"q": binding.user.username})
    assert listed_ids(by_owner) == {str(s.pk) for s in sessions}


def test_changelist_query_count_with_50_rows(admin_client, binding, django_assert_max_num_queries):
    for i in range(49):
        make_session(binding, signature=f"s{i}", status="superseded")
    make_session(binding, signature="live")
    with django_assert_max_num_queries(12):
        response = admin_client.get(CHANGELIST)
    assert response.status_code == 200 and len(response.context["cl"].result_list) == 50


def test_session_page_is_read_only_with_pretty_json(admin_client, sessions):
    session = sessions[2]
    response = admin_client.get(reverse("admin:bindings_syncsession_change", args=[session.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert (
        json.dumps(session.plan, indent=2, sort_keys=True)
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        in html
    )
    assert "<b>x</b>" not in html  # escaped, never rendered
    form = response.context["adminform"].form
    assert "status" not in form.fields and "plan" not in form.fields
    # A POST cannot change anything either.
    admin_client.post(reverse("admin:bindings_syncsession_change", args=[session.pk]), {"status": "cancelled"})
    assert SyncSession.objects.get(pk=session.pk).status == "prepared"


def test_sessions_cannot_be_added_in_the_admin(admin_client):
    assert admin_client.get(reverse("admin:bindings_syncsession_add")).status_code == 403


def test_cancel_action_goes_through_the_service_and_reports_skipped_rows(admin_client, sessions):
    response = admin_client.post(
        CHANGELIST,
        {"action": "cancel_prepared_sessions", "_selected_action": [str(s.pk) for s in sessions]},
        follow=True,
    )
    assert response.status_code == 200
    messages = [str(m) for m in get_messages(response.wsgi_request)]
    assert "Cancelled 1 prepared session(s)." in messages
    assert "Skipped 3 session(s) that were not prepared: 1 cancelled, 2 superseded." in messages
    statuses = dict(SyncSession.objects.values_list("plan_signature", "status"))
    assert statuses == {
        "push-0": "superseded",
        "push-1": "superseded",
        "push-live": "cancelled",
        "pull-gone": "cancelled",
    }


def test_binding_page_shows_its_newest_sessions_inline(admin_client, binding, django_assert_max_num_queries):
    for i in range(25):
        make_session(binding, signature=f"old-{i:02}", status="superseded")
    live = make_session(binding, signature="live")
    url = reverse("admin:bindings_workspacebinding_change", args=[binding.pk])
    with django_assert_max_num_queries(25):
        response = admin_client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert "live" in html and str(live.pk) in html
    assert "old-24" in html and "old-00" not in html  # only the newest 20
    assert f"?workspace_binding__id__exact={binding.pk}" in html
    inline = response.context["inline_admin_formsets"][0]
    assert len(list(inline)) == 20


def test_binding_changelist_search_and_query_count(
    admin_client, user, device, environment, django_assert_max_num_queries
):
    for i in range(50):
        WorkspaceBinding.objects.create(user=user, device=device, environment=environment, local_path=f"/src/p{i}")
    url = reverse("admin:bindings_workspacebinding_changelist")
    with django_assert_max_num_queries(12):
        response = admin_client.get(url)
    assert response.status_code == 200 and len(response.context["cl"].result_list) == 50
    found = admin_client.get(url, {"q": "/src/p7"})
    assert {b.local_path for b in found.context["cl"].result_list} == {"/src/p7"}
    by_device = admin_client.get(url, {"q": str(device.pk)})
    assert len(by_device.context["cl"].result_list) == 50
