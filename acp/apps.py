from django.apps import AppConfig


class AcpConfig(AppConfig):
    name = "acp"
    verbose_name = "ACP registry"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from acp.api import schema, throttling  # noqa: F401  (register the OpenAPI extensions, the rate-limit check)
