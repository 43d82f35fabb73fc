"""Retention over every row that can point at a cleanable row, generated from the models' foreign keys.

For each model some app's retention deletes, one old ended row is doomed; then, for every foreign key (and
one-to-one, `related_name="+"` included) pointing at that model, a live row of the referencing model is made to
point at the doomed row. `cleanup_sessions` must run without error, delete the doomed rows (and the rows a
CASCADE takes with them), clear every SET_NULL key and keep everything else. A new foreign key is covered
without editing this file; a new cleanable model fails `test_every_cleanable_model_has_a_doomed_row`.
"""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import models
from django.utils import timezone

from acp.cleanup import cleanup_targets, referencing_relations
from acp.models import ApiToken, IdempotencyKey, PairingToken
from acp.services import pairing_token_create, token_create
from bindings.models import SyncSession
from commands.models import ControlCommand, LocalSession, Thread, ThreadEvent
from commands.services import NewEvent, thread_events_append
from sessions.models import Launch
from tests.factories import build_world

pytestmark = pytest.mark.django_db

OLD = timezone.now() - timedelta(days=45)


def aged(row, **fields):
    """`row` with `fields` (and `updated_at`) written past `auto_now`."""
    type(row).objects.filter(pk=row.pk).update(updated_at=OLD, **fields)
    return row


def doomed_rows(world, user):
    """One row per cleanable model that retention must delete with the defaults (30 days)."""
    session, device = world[LocalSession], world[LocalSession].device
    binding = world[SyncSession.workspace_binding.field.related_model]
    ended_session = aged(
        LocalSession.objects.create(
            user=user, thread=session.thread, device=device, status="completed", completed_at=OLD
        )
    )
    # An acknowledged command of an ended session can never complete: it goes with its session.
    stranded = ControlCommand.objects.create(
        user=user,
        session=ended_session,
        thread=session.thread,
        command_type="pause",
        status="acknowledged",
        acknowledged_at=OLD,
    )
    return {
        ApiToken: aged_token(user),
        PairingToken: aged(pairing_token_create(user=user).pairing_token, expires_at=OLD),
        SyncSession: aged(
            SyncSession.objects.create(
                user=user,
                workspace_binding=binding,
                device=device,
                environment=binding.environment,
                direction="push",
                plan_signature="old",
                status="superseded",
            )
        ),
        Launch: aged(
            Launch.objects.create(
                user=user,
                workspace=world[Launch].workspace,
                machine=device,
                status="timed_out",
                expires_at=OLD,
                timed_out_at=OLD,
                error_code="daemon_timeout",
            )
        ),
        ControlCommand: aged(
            ControlCommand.objects.create(
                user=user,
                session=session,
                thread=session.thread,
                command_type="message",
                payload={"text": "x"},
                status="cancelled",
                completed_at=OLD,
            )
        ),
        LocalSession: ended_session,
        ThreadEvent: ended_thread_event(user, device),
        IdempotencyKey: aged(
            IdempotencyKey.objects.create(user=user, key="old", request_fingerprint="0" * 64), created_at=OLD
        ),
        "stranded command": stranded,
    }


def ended_thread_event(user, device):
    """An old event of a thread whose only session ended long ago."""
    thread = Thread.objects.create(user=user, title="done")
    aged(LocalSession.objects.create(user=user, thread=thread, device=device, status="failed", completed_at=OLD))
    (event,) = thread_events_append(thread_id=thread.pk, events=[NewEvent("session.ended")], now=OLD)
    return event


def aged_token(user):
    token = token_create(user=user, name="revoked").token
    ApiToken.objects.filter(pk=token.pk).update(revoked_at=OLD)
    return token


def cleanable_models():
    return {target.queryset.model for target in cleanup_targets(cutoff=OLD, now=timezone.now())}


def live_row(world, model):
    return next(row for key, row in world.items() if key is model or (isinstance(key, tuple) and key[1] is model))


def test_every_cleanable_model_has_a_doomed_row(user):
    world = build_world(user)
    assert cleanable_models() <= set(doomed_rows(world, user))


def test_cleanup_deletes_old_rows_whatever_points_at_them_and_keeps_the_rest(user):
    world = build_world(user)
    doomed = doomed_rows(world, user)
    pointing = []  # (relation, referencing row pk, doomed row)
    for model in cleanable_models():
        for relation in referencing_relations(model):
            referencing = live_row(world, relation.related_model)
            relation.related_model._base_manager.filter(pk=referencing.pk).update(
                **{relation.field.attname: doomed[model].pk}
            )
            pointing.append((relation, referencing.pk, doomed[model]))
    assert pointing, "nothing points at a cleanable model: the test would prove nothing"

    out = StringIO()
    call_command("cleanup_sessions", stdout=out)

    for model, row in doomed.items():
        assert not type(row).objects.filter(pk=row.pk).exists(), f"{model} {row} was kept"
    cascaded = set()
    for relation, pk, _ in pointing:
        remaining = relation.related_model._base_manager.filter(pk=pk)
        if relation.on_delete is models.CASCADE:
            assert not remaining.exists(), f"{relation.field} is CASCADE: its row should be gone"
            cascaded.add((relation.related_model, pk))
    for relation, pk, _ in pointing:
        if relation.on_delete is models.SET_NULL and (relation.related_model, pk) not in cascaded:
            assert remaining_value(relation, pk) is None, f"{relation.field} should have been set to NULL"
    for key, row in world.items():
        model = key[1] if isinstance(key, tuple) else key
        if (model, row.pk) not in cascaded:
            assert model.objects.filter(pk=row.pk).exists(), f"live {key} was deleted"

    again = StringIO()
    call_command("cleanup_sessions", stdout=again)  # and every later run succeeds too
    assert "Deleted 0 rows" in again.getvalue()


def remaining_value(relation, pk):
    return relation.related_model._base_manager.filter(pk=pk).values_list(relation.field.attname, flat=True).get()


def test_idempotency_keys_go_after_their_ttl_whatever_the_age(user, settings):
    settings.ACP_IDEMPOTENCY_TTL = "2h"
    fresh = IdempotencyKey.objects.create(user=user, key="fresh", request_fingerprint="0" * 64)
    stale = IdempotencyKey.objects.create(
        user=user, key="stale", request_fingerprint="0" * 64, created_at=timezone.now() - timedelta(hours=3)
    )
    out = StringIO()
    call_command("cleanup_sessions", "--older-than", "30d", stdout=out)
    assert "Deleted 1 idempotency keys." in out.getvalue()
    assert list(IdempotencyKey.objects.values_list("pk", flat=True)) == [fresh.pk]
    assert not IdempotencyKey.objects.filter(pk=stale.pk).exists()


def test_tokens_go_once_revoked_or_expired_longer_than_the_age(user):
    live = token_create(user=user).token
    expired_long_ago = token_create(user=user).token
    revoked_lately = token_create(user=user).token
    ApiToken.objects.filter(pk=expired_long_ago.pk).update(expires_at=OLD)
    ApiToken.objects.filter(pk=revoked_lately.pk).update(revoked_at=timezone.now() - timedelta(days=1))
    out = StringIO()
    call_command("cleanup_sessions", "--older-than", "30d", stdout=out)
    assert "Deleted 1 API tokens." in out.getvalue()
    assert set(ApiToken.objects.values_list("pk", flat=True)) == {live.pk, revoked_lately.pk}
