from django.apps import AppConfig


class AcpSessionsConfig(AppConfig):
    # "sessions" is django.contrib.sessions' label, which the admin needs.
    name = "sessions"
    label = "acp_sessions"
    verbose_name = "Workspaces and launches"
    default_auto_field = "django.db.models.BigAutoField"
