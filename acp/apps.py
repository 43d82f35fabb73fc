from django.apps import AppConfig


class AcpConfig(AppConfig):
    name = "acp"
    verbose_name = "ACP registry"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from acp import dbpool
        from acp.api import schema  # noqa: F401  (registers the OpenAPI extensions)

        dbpool.install()
