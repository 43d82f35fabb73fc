from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from acp.cleanup import cleanup_sessions
from acp.durations import parse_duration


class Command(BaseCommand):
    help = (
        "Delete superseded/cancelled push/pull sessions, finished launches, ended local sessions and control "
        "commands, and revoked or expired API tokens older than an age, and idempotency keys older than "
        "ACP_IDEMPOTENCY_TTL, in short batches. Prepared sessions are never touched."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            default=f"{settings.ACP_RETENTION_DAYS}d",
            help="Age, e.g. 30d, 12h (default: ACP_RETENTION_DAYS days).",
        )
        parser.add_argument(
            "--status",
            help="Push/pull session statuses to delete: superseded and/or cancelled (comma-separated; default both).",
        )
        parser.add_argument("--batch-size", type=int, default=5000)
        parser.add_argument("--dry-run", action="store_true", help="Count only; delete nothing.")

    def handle(self, *args, older_than, status, batch_size, dry_run, **options):
        try:
            age = parse_duration(older_than)
            app_options = {}
            if status is not None:
                app_options["sync_statuses"] = [s.strip() for s in status.split(",") if s.strip()]
            summary = cleanup_sessions(
                older_than=age,
                now=timezone.now(),
                batch_size=batch_size,
                dry_run=dry_run,
                on_progress=self._progress if self.stdout.isatty() else None,
                **app_options,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if self.stdout.isatty():
            self.stdout.write("")
        verb = "Would delete" if dry_run else "Deleted"
        for label, count in summary.counts.items():
            self.stdout.write(f"{verb} {count} {label}.")
        self.stdout.write(self.style.SUCCESS(f"{verb} {summary.total} rows older than {older_than}."))

    def _progress(self, label, done, expected):
        width = 30
        filled = width if not expected else min(width, width * done // expected)
        self.stdout.write(f"\r{label:<20} [{'#' * filled}{'.' * (width - filled)}] {done}/{expected}", ending="")
        self.stdout.flush()
