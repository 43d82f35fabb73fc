from acp import composition


class AcpConfig(composition.AcpAppConfig):
    name = "acp"
    verbose_name = "ACP registry"
    retention = "acp.selectors.retention_targets"
    dashboard = "acp.selectors.dashboard_counts"
    sweep_jobs = ("acp.jobs.forget_old_sign_ins",)
    support_actions = (
        ("apitoken", "revoke_apitoken", "Can revoke API keys"),
        ("pairingtoken", "revoke_pairingtoken", "Can revoke pending pairing tokens"),
    )

    def ready(self):
        from acp import dbpool
        from acp.api import schema, throttling  # noqa: F401  (register the OpenAPI extensions, the rate-limit check)

        dbpool.install()
