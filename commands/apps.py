from acp import composition


class CommandsConfig(composition.AcpAppConfig):
    name = "commands"
    verbose_name = "Threads, local sessions and control commands"
    retention = "commands.selectors.retention_targets"
    dashboard = "commands.selectors.dashboard_counts"
    sweep_jobs = ("commands.jobs.expire_commands", "commands.jobs.reap_lost_sessions")
    support_actions = (("controlcommand", "cancel_controlcommand", "Can cancel pending control commands"),)
