from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from acp.choices import READ_ONLY_SCOPES
from acp.models import Device
from acp.services import token_create


class Command(BaseCommand):
    help = "Mint an API token for USERNAME and print it once, alone on the last line."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--device", help="Scope the token to this device id (a device token).")
        parser.add_argument("--name", default="", help="A label to recognise the token by.")
        parser.add_argument("--expires-in", type=int, metavar="DAYS", help="Expire after DAYS days.")
        parser.add_argument("--read-only", action="store_true", help="Only the read scope: any write answers 403.")

    def handle(self, *args, username, device, name, expires_in, read_only, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        if expires_in is not None and expires_in <= 0:
            raise CommandError("--expires-in must be a positive number of days.")
        device_obj = None
        if device:
            try:
                device_obj = Device.objects.filter(pk=device, user=user).first()
            except Exception as exc:  # a malformed UUID
                raise CommandError(f"Invalid device id {device!r}.") from exc
            if device_obj is None:
                raise CommandError(f"{username} has no device {device}.")
        issued = token_create(
            user=user,
            device=device_obj,
            name=name,
            expires_in=timedelta(days=expires_in) if expires_in else None,
            scopes=READ_ONLY_SCOPES if read_only else None,
        )
        kind = f"device token for {device_obj}" if device_obj else "user token"
        kind = f"read-only {kind}" if read_only else kind
        expiry = issued.token.expires_at.isoformat() if issued.token.expires_at else "never"
        self.stderr.write(f"Created {kind} {issued.token.id} for {username} (expires: {expiry}).")
        self.stderr.write("Store it now: it is shown only once.")
        self.stdout.write(issued.raw)
