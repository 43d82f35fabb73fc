"""Push and pull sessions: prepare (reuse, conflict, supersede), list, retrieve, cancel, apply preview/result."""

import json
import uuid

import pytest
from django.db import IntegrityError, transaction

from bindings.choices import SyncSessionStatus
from bindings.models import SyncSession
from tests.bindings.helpers import key_of, pull_url, sessions_url
from tests.bindings.seed_pages import PULL_PAGE, PUSH_PAGE, read_seed_page, response_shape, status_values
from tests.conftest import make_client, make_token

pytestmark = pytest.mark.django_db

DIRECTIONS = ["push", "pull"]
PLAN = {"files": [{"path": "src/a.py", "sha": "abc", "size": 12}], "base": "snap-1"}
PULL_EXTRA = {"preview", "previewSignature", "result", "resultSignature"}


def prepare(client, direction, binding_id, signature="sig-1", plan=PLAN, **extra):
    body = {"planSignature": signature, "plan": plan, **extra}
    return client.post(sessions_url(direction, binding_id), body, format="json")


# --- the seed pages ------------------------------------------------------------------------------


@pytest.mark.parametrize(("direction", "page"), [("push", PUSH_PAGE), ("pull", PULL_PAGE)])
def test_prepare_responses_have_exactly_the_seed_pages_keys(api, binding, direction, page):
    seed = read_seed_page(page)
    assert seed.body_fields == {"planSignature": True, "plan": True, "metadata": False}
    created = prepare(api, direction, binding.id, metadata={"client": "cli"})
    reused = prepare(api, direction, binding.id)
    for response, status in ((created, 201), (reused, 200)):
        assert response.status_code == status, response.content
        top, nested = response_shape(seed, status)
        body = response.json()
        assert set(body) == top == {key_of(direction), "created"}
        session = body[key_of(direction)]
        documented = nested[key_of(direction)]
        assert len(documented) == 12
        if direction == "push":
            assert set(session) == documented
        else:
            # SPEC: "a pull session also has preview, previewSignature, result, resultSignature".
            assert documented <= set(session)
            assert set(session) == documented | PULL_EXTRA
        assert session["status"] in status_values(page)
    assert created.json()["created"] is True and reused.json()["created"] is False


def test_documented_statuses_are_the_models(api):
    assert status_values(PUSH_PAGE) == status_values(PULL_PAGE) == list(SyncSessionStatus.values)


# --- prepare ------------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_prepare_creates_a_prepared_session_copying_the_binding(api, user, binding, direction):
    response = prepare(api, direction, binding.id, metadata={"client": "cli"})
    assert response.status_code == 201
    session = response.json()[key_of(direction)]
    uuid.UUID(session["id"])
    assert session["workspaceBindingId"] == str(binding.id)
    assert session["userId"] == str(user.id)
    assert session["deviceId"] == str(binding.device_id)
    assert session["environmentId"] == str(binding.environment_id)
    assert session["projectId"] == str(binding.project_id)
    assert session["status"] == "prepared"
    assert session["planSignature"] == "sig-1" and session["plan"] == PLAN
    assert session["metadata"] == {"client": "cli"}
    assert session["createdAt"].endswith("Z") and session["updatedAt"].endswith("Z")
    if direction == "pull":
        assert {k: session[k] for k in PULL_EXTRA} == dict.fromkeys(PULL_EXTRA)
    stored = SyncSession.objects.get(pk=session["id"])
    assert stored.direction == direction and stored.status == "prepared"


def test_metadata_defaults_to_an_empty_object_and_project_may_be_null(api, binding):
    binding.project = None
    binding.save()
    session = prepare(api, "push", binding.id).json()["pushSession"]
    assert session["metadata"] == {} and session["projectId"] is None


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_same_signature_and_plan_reuses_the_row_unchanged(api, binding, direction):
    first = prepare(api, direction, binding.id, metadata={"n": 1}).json()[key_of(direction)]
    before = SyncSession.objects.get(pk=first["id"])
    again = prepare(api, direction, binding.id, metadata={"n": 2})
    assert again.status_code == 200
    assert again.json() == {key_of(direction): first, "created": False}
    after = SyncSession.objects.get(pk=first["id"])
    assert after.updated_at == before.updated_at and after.metadata == {"n": 1}
    assert SyncSession.objects.count() == 1


def test_reuse_compares_plans_as_json_not_as_text(api, binding):
    plan = {"b": [1, 2.5, {"c": None}], "a": "x"}
    first = prepare(api, "push", binding.id, plan=plan).json()["pushSession"]["id"]
    raw = json.dumps({"planSignature": "sig-1", "plan": {"a": "x", "b": [1, 2.5, {"c": None}]}}, indent=4)
    again = api.generic("POST", sessions_url("push", binding.id), raw, content_type="application/json")
    assert again.status_code == 200 and again.json()["pushSession"]["id"] == first


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_same_signature_with_another_plan_is_409_and_changes_nothing(api, binding, direction):
    first = prepare(api, direction, binding.id).json()[key_of(direction)]
    response = prepare(api, direction, binding.id, plan={**PLAN, "base": "snap-2"})
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "conflict"
    assert body["details"][key_of(direction)]["id"] == first["id"]
    assert list(SyncSession.objects.values_list("id", "status")) == [(uuid.UUID(first["id"]), "prepared")]


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_new_signature_supersedes_the_prepared_one(api, binding, direction):
    first = prepare(api, direction, binding.id, signature="a").json()[key_of(direction)]
    second = prepare(api, direction, binding.id, signature="b", plan={"other": True})
    assert second.status_code == 201 and second.json()["created"] is True
    second_id = second.json()[key_of(direction)]["id"]
    assert second_id != first["id"]
    statuses = dict(SyncSession.objects.values_list("id", "status"))
    assert statuses == {uuid.UUID(first["id"]): "superseded", uuid.UUID(second_id): "prepared"}
    superseded = api.get(sessions_url(direction, binding.id, first["id"])).json()[key_of(direction)]
    assert superseded["status"] == "superseded" and superseded["updatedAt"] > first["updatedAt"]

    # Going back to the first signature is a new plan again: a new row, the old one stays superseded.
    third = prepare(api, direction, binding.id, signature="a")
    assert third.status_code == 201
    assert third.json()[key_of(direction)]["id"] not in (first["id"], second_id)
    assert SyncSession.objects.filter(status="prepared").count() == 1


def test_a_superseded_sessions_signature_with_another_plan_is_a_new_session_not_a_conflict(api, binding):
    prepare(api, "push", binding.id, signature="a")
    prepare(api, "push", binding.id, signature="b")
    response = prepare(api, "push", binding.id, signature="a", plan={"changed": 1})
    assert response.status_code == 201


def test_push_and_pull_are_independent(api, binding):
    push = prepare(api, "push", binding.id, signature="same")
    pull = prepare(api, "pull", binding.id, signature="same", plan={"different": "plan"})
    assert push.status_code == pull.status_code == 201
    assert SyncSession.objects.filter(status="prepared").count() == 2
    assert prepare(api, "pull", binding.id, signature="new").status_code == 201
    assert SyncSession.objects.get(pk=push.json()["pushSession"]["id"]).status == "prepared"


def test_bindings_are_independent(api, user, binding, device, environment):
    other = type(binding).objects.create(user=user, device=device, environment=environment, local_path="/b")
    assert prepare(api, "push", binding.id).status_code == 201
    assert prepare(api, "push", other.id).status_code == 201
    assert SyncSession.objects.filter(status="prepared").count() == 2


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_someone_elses_or_a_missing_binding_is_404(api, other_binding, direction):
    missing = prepare(api, direction, uuid.uuid4())
    theirs = prepare(api, direction, other_binding.id)
    assert missing.status_code == theirs.status_code == 404
    assert missing.json() == theirs.json() == {"error": "Not found.", "code": "not_found", "details": {}}
    assert SyncSession.objects.count() == 0


def test_the_database_refuses_a_second_prepared_session(binding):
    fields = {
        "user": binding.user,
        "workspace_binding": binding,
        "device": binding.device,
        "environment": binding.environment,
        "plan": {},
    }
    SyncSession.objects.create(direction="push", plan_signature="a", **fields)
    SyncSession.objects.create(direction="pull", plan_signature="a", **fields)
    SyncSession.objects.create(direction="push", plan_signature="b", status="superseded", **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        SyncSession.objects.create(direction="push", plan_signature="c", **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        SyncSession.objects.create(direction="sideways", plan_signature="d", **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        SyncSession.objects.create(direction="push", plan_signature="e", preview={}, status="cancelled", **fields)


# --- request validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"plan": PLAN}, "planSignature"),
        ({"planSignature": "s"}, "plan"),
        ({"planSignature": "", "plan": PLAN}, "planSignature"),
        ({"planSignature": "x" * 513, "plan": PLAN}, "planSignature"),
        ({"planSignature": 42, "plan": PLAN}, "planSignature"),
        ({"planSignature": None, "plan": PLAN}, "planSignature"),
        ({"planSignature": ["s"], "plan": PLAN}, "planSignature"),
        ({"planSignature": "s", "plan": [1, 2]}, "plan"),
        ({"planSignature": "s", "plan": "a plan"}, "plan"),
        ({"planSignature": "s", "plan": None}, "plan"),
        ({"planSignature": "s", "plan": 3}, "plan"),
        ({"planSignature": "s", "plan": PLAN, "metadata": ["x"]}, "metadata"),
        ({"planSignature": "s", "plan": PLAN, "metadata": "x"}, "metadata"),
    ],
)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_bad_bodies_are_400_naming_the_field(api, binding, direction, body, field):
    response = api.post(sessions_url(direction, binding.id), body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_request"
    assert field in response.json()["details"]
    assert SyncSession.objects.count() == 0


def test_signature_length_bounds_are_inclusive(api, binding):
    assert prepare(api, "push", binding.id, signature="x").status_code == 201
    long = prepare(api, "push", binding.id, signature="y" * 512)
    assert long.status_code == 201 and long.json()["pushSession"]["planSignature"] == "y" * 512


def test_signatures_are_kept_exactly_as_sent(api, binding):
    response = prepare(api, "push", binding.id, signature="  padded  ")
    assert response.json()["pushSession"]["planSignature"] == "  padded  "
    assert prepare(api, "push", binding.id, signature="padded").status_code == 201


@pytest.mark.parametrize(
    "raw",
    [
        '{"planSignature": "s", "plan": {"a": "\\u0000"}}',
        '{"planSignature": "s\\u0000", "plan": {}}',
        '{"planSignature": "s", "plan": {"k\\u0000": 1}}',
        '{"planSignature": "s", "plan": {}, "metadata": {"deep": ["\\u0000"]}}',
    ],
)
def test_nul_anywhere_is_400(api, binding, raw):
    response = api.generic("POST", sessions_url("push", binding.id), raw, content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "invalid_request"
    assert SyncSession.objects.count() == 0


@pytest.mark.parametrize("raw", ['{"planSignature": "s", "plan": {"n": 1e400}}', '{"planSignature": "s", "plan": []}'])
def test_numbers_no_json_column_can_store_are_400(api, binding, raw):
    response = api.generic("POST", sessions_url("pull", binding.id), raw, content_type="application/json")
    assert response.status_code == 400
    assert "plan" in response.json()["details"]


def test_plan_size_limit_is_inclusive_and_over_it_is_413(api, binding, settings):
    plan = {"blob": "é" * 100}  # 2 bytes a character in UTF-8: the limit counts bytes, not characters
    size = len(json.dumps(plan, ensure_ascii=False, separators=(",", ":")).encode())
    settings.ACP_MAX_PLAN_BYTES = size
    assert prepare(api, "push", binding.id, signature="fits", plan=plan).status_code == 201
    settings.ACP_MAX_PLAN_BYTES = size - 1
    response = prepare(api, "push", binding.id, signature="over", plan=plan)
    assert response.status_code == 413
    body = response.json()
    assert body["code"] == "payload_too_large"
    assert body["details"] == {"field": "plan", "size": size, "limit": size - 1}
    assert SyncSession.objects.get().plan_signature == "fits"


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_default_plan_limit_is_one_mebibyte(api, binding, direction):
    response = prepare(api, direction, binding.id, plan={"blob": "x" * (1024 * 1024)})
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
    assert prepare(api, direction, binding.id, plan={"blob": "x" * (1024 * 1024 - 20)}).status_code == 201


def test_wrong_content_type_is_415(api, binding):
    response = api.generic("POST", sessions_url("push", binding.id), "planSignature=s", content_type="text/plain")
    assert response.status_code == 415 and response.json()["code"] == "unsupported_media_type"


def test_malformed_json_is_400(api, binding):
    response = api.generic("POST", sessions_url("push", binding.id), '{"plan": {', content_type="application/json")
    assert response.status_code == 400


# --- list and retrieve --------------------------------------------------------------------------


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_list_is_newest_first_filtered_by_status_and_direction(api, binding, direction):
    ids = [prepare(api, direction, binding.id, signature=f"s{i}").json()[key_of(direction)]["id"] for i in range(3)]
    other_direction = "pull" if direction == "push" else "push"
    prepare(api, other_direction, binding.id)

    listed = api.get(sessions_url(direction, binding.id))
    assert listed.status_code == 200
    body = listed.json()
    assert set(body) == {"object", "data", "total_count", "has_more"}
    assert body["object"] == "list" and body["total_count"] == 3 and body["has_more"] is False
    assert [item["id"] for item in body["data"]] == ids[::-1]

    prepared = api.get(sessions_url(direction, binding.id) + "?status=prepared").json()
    assert [item["id"] for item in prepared["data"]] == [ids[2]]
    superseded = api.get(sessions_url(direction, binding.id) + "?status=superseded&limit=1").json()
    assert [item["id"] for item in superseded["data"]] == [ids[1]]
    assert superseded["total_count"] == 2 and superseded["has_more"] is True
    assert api.get(sessions_url(direction, binding.id) + "?status=cancelled").json()["data"] == []
    assert api.get(sessions_url(direction, binding.id) + "?status=done").status_code == 400


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_retrieve_wraps_the_session(api, binding, direction):
    created = prepare(api, direction, binding.id).json()[key_of(direction)]
    response = api.get(sessions_url(direction, binding.id, created["id"]))
    assert response.status_code == 200 and response.json() == {key_of(direction): created}


def test_a_session_is_only_found_under_its_own_binding_and_direction(api, user, binding, device, environment):
    session_id = prepare(api, "push", binding.id).json()["pushSession"]["id"]
    other = type(binding).objects.create(user=user, device=device, environment=environment, local_path="/b")
    assert api.get(sessions_url("pull", binding.id, session_id)).status_code == 404
    assert api.get(sessions_url("push", other.id, session_id)).status_code == 404
    assert api.post(sessions_url("pull", binding.id, session_id, "cancel")).status_code == 404


def test_an_empty_list_of_an_existing_binding_is_200_and_of_anyone_elses_404(api, binding, other_binding):
    assert api.get(sessions_url("push", binding.id)).json()["total_count"] == 0
    missing = api.get(sessions_url("push", uuid.uuid4()))
    theirs = api.get(sessions_url("push", other_binding.id))
    assert missing.status_code == theirs.status_code == 404 and missing.json() == theirs.json()


def test_someone_elses_sessions_are_invisible(api, other_api, binding, other_binding):
    session_id = prepare(other_api, "pull", other_binding.id).json()["pullSession"]["id"]
    for path in (
        sessions_url("pull", other_binding.id, session_id),
        sessions_url("pull", binding.id, session_id),
    ):
        assert api.get(path).status_code == 404
        assert api.post(path + "/cancel").status_code == 404
        assert (
            api.post(path + "/apply-preview", {"preview": {}, "previewSignature": "p"}, format="json").status_code
            == 404
        )
    assert SyncSession.objects.get().status == "prepared" and SyncSession.objects.get().preview is None


def test_push_sessions_have_no_apply_endpoints(api, binding):
    session_id = prepare(api, "push", binding.id).json()["pushSession"]["id"]
    path = sessions_url("push", binding.id, session_id, "apply-preview")
    assert api.post(path, {"preview": {}, "previewSignature": "p"}, format="json").status_code == 404


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_sessions_cannot_be_edited_or_deleted_directly(api, binding, method):
    session_id = prepare(api, "push", binding.id).json()["pushSession"]["id"]
    response = getattr(api, method)(sessions_url("push", binding.id, session_id), {}, format="json")
    assert response.status_code == 405
    assert SyncSession.objects.get().status == "prepared"


# --- cancel ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_cancel_a_prepared_session_then_again(api, binding, direction):
    session = prepare(api, direction, binding.id).json()[key_of(direction)]
    cancelled = api.post(sessions_url(direction, binding.id, session["id"], "cancel"))
    assert cancelled.status_code == 200
    body = cancelled.json()
    assert set(body) == {key_of(direction)}
    assert body[key_of(direction)]["status"] == "cancelled" and body[key_of(direction)]["id"] == session["id"]
    stamp = SyncSession.objects.get(pk=session["id"]).updated_at

    again = api.post(sessions_url(direction, binding.id, session["id"], "cancel"))
    assert again.status_code == 200 and again.json() == body
    assert SyncSession.objects.get(pk=session["id"]).updated_at == stamp

    # With nothing prepared, the same signature prepares a new session.
    assert prepare(api, direction, binding.id).status_code == 201


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_cancel_a_superseded_session_is_409(api, binding, direction):
    first = prepare(api, direction, binding.id, signature="a").json()[key_of(direction)]
    prepare(api, direction, binding.id, signature="b")
    response = api.post(sessions_url(direction, binding.id, first["id"], "cancel"))
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "state_transition_conflict"
    assert body["details"][key_of(direction)]["status"] == "superseded"
    assert SyncSession.objects.get(pk=first["id"]).status == "superseded"


# --- pull: apply preview and result ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "content", "signature"),
    [("apply-preview", "preview", "previewSignature"), ("apply-result", "result", "resultSignature")],
)
def test_apply_attaches_once_per_signature(api, binding, action, content, signature):
    session = prepare(api, "pull", binding.id, metadata={"keep": 1}).json()["pullSession"]
    path = pull_url(binding.id, session["id"], action)
    body = {content: {"changes": 3}, signature: "p1", "metadata": {"step": action}}

    first = api.post(path, body, format="json")
    assert first.status_code == 200, first.content
    assert set(first.json()) == {"pullSession", "updated"} and first.json()["updated"] is True
    attached = first.json()["pullSession"]
    assert attached[content] == {"changes": 3} and attached[signature] == "p1"
    assert attached["metadata"] == {"keep": 1, "step": action}
    assert attached["status"] == "prepared"

    repeat = api.post(path, body, format="json")
    assert repeat.status_code == 200 and repeat.json() == {"pullSession": attached, "updated": False}

    conflict = api.post(path, {**body, content: {"changes": 4}}, format="json")
    assert conflict.status_code == 409 and conflict.json()["code"] == "conflict"

    replaced = api.post(path, {content: {"changes": 5}, signature: "p2"}, format="json")
    assert replaced.status_code == 200 and replaced.json()["updated"] is True
    assert replaced.json()["pullSession"][content] == {"changes": 5}
    assert replaced.json()["pullSession"]["metadata"] == {"keep": 1, "step": action}
    assert api.get(pull_url(binding.id, session["id"])).json()["pullSession"] == replaced.json()["pullSession"]


def test_preview_and_result_are_kept_apart(api, binding):
    session_id = prepare(api, "pull", binding.id).json()["pullSession"]["id"]
    api.post(
        pull_url(binding.id, session_id, "apply-preview"), {"preview": {"a": 1}, "previewSignature": "x"}, format="json"
    )
    result = api.post(
        pull_url(binding.id, session_id, "apply-result"), {"result": {"b": 2}, "resultSignature": "x"}, format="json"
    )
    assert result.json()["updated"] is True
    session = result.json()["pullSession"]
    assert session["preview"] == {"a": 1} and session["result"] == {"b": 2}
    assert session["previewSignature"] == session["resultSignature"] == "x"


@pytest.mark.parametrize("action", ["apply-preview", "apply-result"])
@pytest.mark.parametrize("how", ["superseded", "cancelled"])
def test_apply_on_a_session_that_is_not_prepared_is_409(api, binding, action, how):
    session_id = prepare(api, "pull", binding.id, signature="a").json()["pullSession"]["id"]
    if how == "superseded":
        prepare(api, "pull", binding.id, signature="b")
    else:
        api.post(pull_url(binding.id, session_id, "cancel"))
    kind = action.split("-")[1]
    response = api.post(pull_url(binding.id, session_id, action), {kind: {}, f"{kind}Signature": "s"}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "state_transition_conflict"
    assert response.json()["details"]["pullSession"]["status"] == how
    assert getattr(SyncSession.objects.get(pk=session_id), kind) is None


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("apply-preview", {"previewSignature": "s"}, "preview"),
        ("apply-preview", {"preview": {}}, "previewSignature"),
        ("apply-preview", {"preview": [1], "previewSignature": "s"}, "preview"),
        ("apply-preview", {"preview": {}, "previewSignature": ""}, "previewSignature"),
        ("apply-preview", {"preview": {}, "previewSignature": "s" * 513}, "previewSignature"),
        ("apply-preview", {"preview": {}, "previewSignature": "s", "metadata": 1}, "metadata"),
        ("apply-result", {"resultSignature": "s"}, "result"),
        ("apply-result", {"result": {}, "resultSignature": 5}, "resultSignature"),
        ("apply-result", {"result": "done", "resultSignature": "s"}, "result"),
    ],
)
def test_apply_bodies_are_validated(api, binding, action, body, field):
    session_id = prepare(api, "pull", binding.id).json()["pullSession"]["id"]
    response = api.post(pull_url(binding.id, session_id, action), body, format="json")
    assert response.status_code == 400 and field in response.json()["details"]
    stored = SyncSession.objects.get(pk=session_id)
    assert stored.preview is None and stored.result is None


def test_apply_content_has_the_plan_size_limit(api, binding, settings):
    session_id = prepare(api, "pull", binding.id).json()["pullSession"]["id"]
    settings.ACP_MAX_PLAN_BYTES = 50
    response = api.post(
        pull_url(binding.id, session_id, "apply-result"),
        {"result": {"x": "y" * 60}, "resultSignature": "s"},
        format="json",
    )
    assert response.status_code == 413
    assert SyncSession.objects.get(pk=session_id).result is None


# --- device tokens ------------------------------------------------------------------------------


def test_a_device_token_does_its_own_devices_sync_work(binding, device_api):
    response = prepare(device_api, "pull", binding.id)
    assert response.status_code == 201
    session_id = response.json()["pullSession"]["id"]
    assert device_api.get(pull_url(binding.id)).json()["total_count"] == 1
    assert device_api.get(pull_url(binding.id, session_id)).status_code == 200
    applied = device_api.post(
        pull_url(binding.id, session_id, "apply-preview"), {"preview": {}, "previewSignature": "p"}, format="json"
    )
    assert applied.status_code == 200
    assert device_api.post(pull_url(binding.id, session_id, "cancel")).status_code == 200
    assert prepare(device_api, "push", binding.id).status_code == 201


def test_a_device_token_cannot_touch_another_devices_bindings(user, binding, second_device, api):
    session_id = prepare(api, "push", binding.id).json()["pushSession"]["id"]
    client = make_client(make_token(user, device=second_device))
    assert prepare(client, "push", binding.id, signature="new").status_code == 404
    assert client.get(sessions_url("push", binding.id)).status_code == 404
    assert client.get(sessions_url("push", binding.id, session_id)).status_code == 404
    assert client.post(sessions_url("push", binding.id, session_id, "cancel")).status_code == 404
    assert SyncSession.objects.get().status == "prepared"


# --- query counts -------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_list_query_count_does_not_grow_with_page_size(api, binding, direction, django_assert_max_num_queries):
    for i in range(60):
        prepare(api, direction, binding.id, signature=f"s{i}")
    with django_assert_max_num_queries(3):
        response = api.get(sessions_url(direction, binding.id) + "?limit=100")
    assert len(response.json()["data"]) == 60
    with django_assert_max_num_queries(3):
        assert api.get(sessions_url(direction, binding.id) + "?status=cancelled").json()["total_count"] == 0


def test_retrieve_and_cancel_query_counts(api, binding, django_assert_max_num_queries):
    session_id = prepare(api, "push", binding.id).json()["pushSession"]["id"]
    with django_assert_max_num_queries(2):
        assert api.get(sessions_url("push", binding.id, session_id)).status_code == 200
    with django_assert_max_num_queries(6):  # auth, fetch, savepoint, lock, update, release (test transaction)
        assert api.post(sessions_url("push", binding.id, session_id, "cancel")).status_code == 200
