from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from acp.durations import parse_duration
from commands.services import commands_expire


class Command(BaseCommand):
    help = "Cancel control commands still pending after DURATION (default ACP_COMMAND_TTL)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            metavar="DURATION",
            help=f"Age of the pending commands to cancel: 30s, 15m, 2h, 30d (default {settings.ACP_COMMAND_TTL}).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be cancelled.")

    def handle(self, *args, older_than, dry_run, **options):
        text = older_than or settings.ACP_COMMAND_TTL
        try:
            age = parse_duration(text)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if age.total_seconds() <= 0:
            raise CommandError("--older-than must be a positive duration.")
        summary = commands_expire(older_than=age, dry_run=dry_run)
        verb = "Would cancel" if dry_run else "Cancelled"
        self.stdout.write(
            self.style.SUCCESS(
                f"{verb} {summary.commands} pending command(s) of {summary.sessions} session(s) "
                f"created before {summary.cutoff.isoformat()} (older than {text})."
            )
        )
