from django.apps import AppConfig


class CommandsConfig(AppConfig):
    name = "commands"
    verbose_name = "Threads, local sessions and control commands"
    default_auto_field = "django.db.models.BigAutoField"
