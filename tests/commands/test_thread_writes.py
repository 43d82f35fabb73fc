"""Threads: a create that asks ACP to run something is refused; projectId; PATCH and DELETE within the rules."""

import pytest

from commands.models import ControlCommand, LocalSession, Thread
from commands.services import local_session_complete

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "extra",
    [{"content": "fix it"}, {"messages": [{"role": "user", "content": "x"}]}, {"task": "x"}, {"agentId": "a"}],
)
def test_a_create_that_asks_to_run_something_is_refused_naming_the_field(api, environment, extra):
    response = api.post("/v1/threads", {"environmentId": str(environment.id), **extra}, format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert set(body["details"]) == set(extra) and "does not run cloud agents" in body["error"]
    assert not Thread.objects.exists()


def test_project_id_is_stored_and_filters(api, project, environment, other_user):
    mine = api.post("/v1/threads", {"projectId": str(project.id)}, format="json").json()["thread"]
    loose = api.post("/v1/threads", {}, format="json").json()["thread"]
    assert mine["projectId"] == str(project.id) and loose["projectId"] is None
    assert [t["id"] for t in api.get(f"/v1/threads?projectId={project.id}").json()["data"]] == [mine["id"]]
    assert [t["id"] for t in api.get("/v1/threads?projectId=none").json()["data"]] == [loose["id"]]


def test_unknown_list_filters_are_refused(api, thread):
    response = api.get("/v1/threads?agentId=a&status=active")
    assert response.status_code == 400 and set(response.json()["details"]) == {"agentId"}


def test_patch_changes_title_metadata_and_status(api, thread):
    url = f"/v1/threads/{thread.id}"
    patched = api.patch(url, {"title": "new", "metadata": {"k": 1}, "status": "running"}, format="json")
    assert patched.status_code == 200, patched.content
    assert {k: patched.json()["thread"][k] for k in ("title", "metadata", "status")} == {
        "title": "new",
        "metadata": {"k": 1},
        "status": "running",
    }
    before = Thread.objects.get(pk=thread.pk).updated_at
    assert api.patch(url, {"title": "new"}, format="json").json() == patched.json()
    assert Thread.objects.get(pk=thread.pk).updated_at == before  # a repeat writes nothing


def test_an_ended_thread_keeps_its_status(api, thread):
    url = f"/v1/threads/{thread.id}"
    assert api.patch(url, {"status": "completed"}, format="json").status_code == 200
    refused = api.patch(url, {"status": "active"}, format="json")
    assert refused.status_code == 409 and refused.json()["code"] == "state_transition_conflict"
    assert refused.json()["details"]["thread"]["status"] == "completed"


def test_patch_refuses_fields_it_cannot_act_on(api, thread):
    response = api.patch(f"/v1/threads/{thread.id}", {"agentId": "a", "environmentId": None}, format="json")
    assert response.status_code == 400 and set(response.json()["details"]) == {"agentId", "environmentId"}


def test_a_thread_with_a_live_session_is_neither_ended_nor_deleted(api, thread, session):
    url = f"/v1/threads/{thread.id}"
    ended = api.patch(url, {"status": "cancelled"}, format="json")
    assert ended.status_code == 409 and ended.json()["code"] == "conflict"
    deleted = api.delete(url)
    assert deleted.status_code == 409 and deleted.json()["details"]["thread"]["id"] == str(thread.id)
    assert Thread.objects.filter(pk=thread.pk).exists()

    local_session_complete(session=session, status="completed")
    assert api.delete(url).status_code == 204
    assert not Thread.objects.filter(pk=thread.pk).exists()
    assert not LocalSession.objects.filter(pk=session.pk).exists()
    assert not ControlCommand.objects.filter(thread_id=thread.pk).exists()
    assert api.get(url).status_code == 404


def test_someone_elses_thread_cannot_be_patched_or_deleted(other_api, thread):
    assert other_api.patch(f"/v1/threads/{thread.id}", {"title": "x"}, format="json").status_code == 404
    assert other_api.delete(f"/v1/threads/{thread.id}").status_code == 404
    assert Thread.objects.get(pk=thread.pk).title == "fix the build"
