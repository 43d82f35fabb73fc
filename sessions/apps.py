from acp import composition


class AcpSessionsConfig(composition.AcpAppConfig):
    # "sessions" is django.contrib.sessions' label, which the admin needs.
    name = "sessions"
    label = "acp_sessions"
    verbose_name = "Workspaces and launches"
    retention = "sessions.selectors.retention_targets"
    dashboard = "sessions.selectors.dashboard_counts"
    sweep_jobs = ("sessions.jobs.expire_launches",)
    fast_streams = ("sessions.api.urls.MACHINE_CHANNEL_FAST",)
