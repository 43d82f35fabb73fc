from acp import composition


class AcpConfig(composition.AcpAppConfig):
    name = "acp"
    verbose_name = "ACP registry"
    retention = "acp.selectors.retention_targets"
    dashboard = "acp.selectors.dashboard_counts"

    def ready(self):
        from acp.api import schema, throttling  # noqa: F401  (register the OpenAPI extensions, the rate-limit check)
