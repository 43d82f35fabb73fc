from django.core.management.base import BaseCommand

from acp.roles import support_group_sync


class Command(BaseCommand):
    help = "Create or update the read-only 'support' group (view everything, run the cancel actions). Idempotent."

    def handle(self, *args, **options):
        group, created = support_group_sync()
        verb = "Created" if created else "Updated"
        self.stdout.write(
            self.style.SUCCESS(f"{verb} group {group.name!r} with {group.permissions.count()} permissions.")
        )
