from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from acp.services import token_create

DEMO_USERNAME = "demo"


class Command(BaseCommand):
    help = "Create (or reuse) the demo user and print a fresh user token for it, alone on the last line."

    def handle(self, *args, **options):
        user, created = get_user_model().objects.get_or_create(
            username=DEMO_USERNAME, defaults={"email": "demo@example.com", "is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_password(DEMO_USERNAME)
            user.save(update_fields=["password"])
        issued = token_create(user=user, name="demo")
        self.stderr.write(
            self.style.SUCCESS(
                f"Demo user {DEMO_USERNAME!r} ({'created' if created else 'exists'}; admin password "
                f"{DEMO_USERNAME!r} when created). A new API token for it:"
            )
        )
        self.stdout.write(issued.raw)
