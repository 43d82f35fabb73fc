"""The session services, called directly: both variants of the supersede step, and the transitions."""

import pytest
from django.utils import timezone

from acp.domain import InvalidTransition, NotFound
from bindings import services
from bindings.models import SyncSession

pytestmark = pytest.mark.django_db


def make_session(binding, *, direction="push", signature="a", status="prepared", plan=None):
    return SyncSession.objects.create(
        user=binding.user,
        workspace_binding=binding,
        device=binding.device,
        environment=binding.environment,
        project=binding.project,
        direction=direction,
        plan_signature=signature,
        plan=plan if plan is not None else {"signature": signature},
        status=status,
    )


@pytest.mark.parametrize("single_statement", [True, False], ids=["postgresql", "portable"])
class TestSupersedeUnlessSigned:
    def call(self, binding, signature, single_statement, direction="push"):
        return services._supersede_unless_signed(
            binding_id=binding.pk,
            direction=direction,
            plan_signature=signature,
            now=timezone.now(),
            single_statement=single_statement,
        )

    def test_nothing_prepared(self, binding, single_statement):
        make_session(binding, status="superseded")
        assert self.call(binding, "a", single_statement) is None

    def test_same_signature_is_returned_untouched(self, binding, single_statement):
        session = make_session(binding, plan={"x": [1, 2]})
        found = self.call(binding, "a", single_statement)
        assert found.pk == session.pk and found.plan == {"x": [1, 2]} and found.status == "prepared"
        after = SyncSession.objects.get(pk=session.pk)
        assert after.status == "prepared" and after.updated_at == session.updated_at

    def test_another_signature_is_superseded(self, binding, single_statement):
        session = make_session(binding)
        pull = make_session(binding, direction="pull")
        found = self.call(binding, "b", single_statement)
        assert found.pk == session.pk and found.plan_signature == "a"
        after = SyncSession.objects.get(pk=session.pk)
        assert after.status == "superseded" and after.updated_at > session.updated_at
        assert SyncSession.objects.get(pk=pull.pk).status == "prepared"


def test_prepare_copies_the_binding_and_reports_creation(binding):
    prepared = services.sync_session_prepare(
        user=binding.user, binding_id=binding.pk, direction="pull", plan_signature="s", plan={"a": 1}
    )
    assert prepared.changed is True
    session = prepared.obj
    assert (session.user_id, session.device_id, session.environment_id, session.project_id) == (
        binding.user_id,
        binding.device_id,
        binding.environment_id,
        binding.project_id,
    )
    assert session.metadata == {}
    again = services.sync_session_prepare(
        user=binding.user, binding_id=binding.pk, direction="pull", plan_signature="s", plan={"a": 1}
    )
    assert again.changed is False and again.obj.pk == session.pk


def test_prepare_refuses_a_binding_of_another_user_or_device(binding, other_user, second_device):
    with pytest.raises(NotFound):
        services.sync_session_prepare(
            user=other_user, binding_id=binding.pk, direction="push", plan_signature="s", plan={}
        )
    with pytest.raises(NotFound):
        services.sync_session_prepare(
            user=binding.user,
            device_id=second_device.pk,
            binding_id=binding.pk,
            direction="push",
            plan_signature="s",
            plan={},
        )
    assert not SyncSession.objects.exists()


def test_cancel_transitions(binding):
    session = make_session(binding)
    assert services.sync_session_cancel(session=session).changed is True
    assert session.status == "cancelled"
    assert services.sync_session_cancel(session=session).changed is False
    superseded = make_session(binding, signature="b", status="superseded")
    with pytest.raises(InvalidTransition):
        services.sync_session_cancel(session=superseded)
    assert SyncSession.objects.get(pk=superseded.pk).status == "superseded"


def test_cancel_sees_the_current_row_not_the_callers_copy(binding):
    session = make_session(binding)
    stale = SyncSession.objects.get(pk=session.pk)
    SyncSession.objects.filter(pk=session.pk).update(status="superseded")
    with pytest.raises(InvalidTransition):
        services.sync_session_cancel(session=stale)
    assert stale.status == "superseded"


def test_apply_is_for_pull_sessions_only(binding):
    push = make_session(binding)
    with pytest.raises(ValueError):
        services.pull_session_apply_preview(session=push, preview={}, preview_signature="p")
