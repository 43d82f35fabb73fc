"""How the core finds what each ACP app offers, so adding an app never means editing the core.

Each app's AppConfig subclasses `AcpAppConfig` (import this module, not the class: Django takes a lone AppConfig
subclass in `apps.py` as the app's config) and names, as dotted paths, each optional:
- `retention`: `f(*, cutoff, now, **options) -> list[acp.cleanup.Target]`, what retention may delete, in the
  order it goes (options the app does not know are ignored);
- `dashboard`: `f(*, now) -> dict[str, int]`, the support dashboard's figures;
- `sweep_jobs`: `f(*, now, dry_run) -> acp.sweep.JobReport` each, the periodic jobs `manage.py sweep` runs;
- `fast_streams`: `acp.serving.fast_streams.FastStream` each, stream routes whose plain case skips Django's handler;
and `support_actions`: the admin actions the support role may run, `(model_name, codename, name)` each.
"""

from collections.abc import Callable, Iterator

from django.apps import AppConfig, apps
from django.utils.module_loading import import_string


class AcpAppConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    retention: str | None = None
    dashboard: str | None = None
    sweep_jobs: tuple[str, ...] = ()
    fast_streams: tuple[str, ...] = ()
    support_actions: tuple[tuple[str, str, str], ...] = ()


def acp_app_configs() -> list[AcpAppConfig]:
    """The installed ACP apps, in `INSTALLED_APPS` order."""
    return [config for config in apps.get_app_configs() if isinstance(config, AcpAppConfig)]


def hooks(name: str) -> Iterator[Callable]:
    """The functions the ACP apps name in their `name` attribute (a dotted path or a tuple of them), in app order."""
    for config in acp_app_configs():
        paths = getattr(config, name)
        for path in (paths,) if isinstance(paths, str) else paths or ():
            yield import_string(path)
