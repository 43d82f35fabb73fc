# The Idempotency-Key record became shared by every create endpoint (acp.IdempotencyKey); its rows move there,
# the command they created kept as `resource_id`, the answer kept as the JSON text a replay sends.

import json

from django.db import migrations


def copy_keys_to_acp(apps, schema_editor):
    old = apps.get_model("commands", "IdempotencyKey")
    new = apps.get_model("acp", "IdempotencyKey")
    new.objects.bulk_create(
        new(
            id=row.id,
            user_id=row.user_id,
            key=row.key,
            request_fingerprint=row.request_fingerprint,
            response_status=row.response_status,
            response_body="" if row.response_body is None else json.dumps(row.response_body),
            resource_id=row.command_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
        for row in old.objects.iterator()
    )


class Migration(migrations.Migration):

    dependencies = [
        ('acp', '0002_idempotency_key'),
        ('commands', '0002_constraints_and_idempotency_keys'),
    ]

    operations = [
        migrations.RunPython(copy_keys_to_acp, migrations.RunPython.noop),
        migrations.DeleteModel(
            name='IdempotencyKey',
        ),
    ]
