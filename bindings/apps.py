from acp import composition


class BindingsConfig(composition.AcpAppConfig):
    name = "bindings"
    verbose_name = "Workspace bindings and push/pull sessions"
    retention = "bindings.selectors.retention_targets"
    dashboard = "bindings.selectors.dashboard_counts"
    support_actions = (("syncsession", "cancel_syncsession", "Can cancel prepared push/pull sessions"),)
