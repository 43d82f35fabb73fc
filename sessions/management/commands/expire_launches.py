from django.core.management.base import BaseCommand

from sessions.services import launches_expire


class Command(BaseCommand):
    help = (
        "Time out launches still pending after their deadline (their waiting request is gone, e.g. the server "
        "process died). A live launch times itself out; this repairs the ones nobody is waiting for."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Only count them.")

    def handle(self, *args, dry_run=False, **options):
        count = launches_expire(dry_run=dry_run)
        verb = "Would time out" if dry_run else "Timed out"
        self.stdout.write(self.style.SUCCESS(f"{verb} {count} stale pending launch(es)."))
