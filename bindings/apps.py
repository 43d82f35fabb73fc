from django.apps import AppConfig


class BindingsConfig(AppConfig):
    name = "bindings"
    verbose_name = "Workspace bindings and push/pull sessions"
    default_auto_field = "django.db.models.BigAutoField"
