from django.core.management.base import BaseCommand, CommandError

from acp.sweep import sweep


class Command(BaseCommand):
    help = (
        "Run every periodic job once: expire pending commands (ACP_COMMAND_TTL), time out stale launches, end "
        "local sessions whose daemon went silent (ACP_SESSION_LOST_AFTER), then retention (ACP_RETENTION_DAYS, "
        "ACP_IDEMPOTENCY_TTL). Safe to run from cron on several hosts: a second concurrent run skips."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Only count what each job would do.")

    def handle(self, *args, dry_run, **options):
        try:
            reports = sweep(dry_run=dry_run)
        except ValueError as exc:  # a malformed duration setting
            raise CommandError(str(exc)) from exc
        if reports is None:
            self.stdout.write("Skipped: another sweep is running (it holds the sweep lock); nothing done.")
            return
        for report in reports:
            self.stdout.write(f"{report.name}: {report.message}.")
        self.stdout.write(self.style.SUCCESS(f"Sweep {'dry run ' if dry_run else ''}done."))
