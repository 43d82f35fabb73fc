"""The support dashboard's figures: what is stuck, what is alive, what failed today (each app's `dashboard`)."""

from django.utils import timezone

from acp.composition import hooks


def dashboard_counts(now=None) -> dict[str, int]:
    now = now or timezone.now()
    return {name: count for counts in hooks("dashboard") for name, count in counts(now=now).items()}
