"""ASGI entry point: the production server model (uvicorn), so long-polls wait without a thread each."""

import gc
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "acp.settings")
django.setup(set_prefix=False)  # as django.core.asgi.get_asgi_application() does

from acp.asgi_guards import RequestBodyGuard  # noqa: E402 - needs the apps loaded
from acp.request_threads import PooledThreadsASGIHandler  # noqa: E402 - needs the apps loaded

application = RequestBodyGuard(PooledThreadsASGIHandler())


def tune_garbage_collector() -> None:
    """Keep the cyclic garbage collector's full passes rare and short in a process holding thousands of waiters.

    Every waiting long-poll keeps its objects alive (≈ 50 KB each), and the objects of each request in flight are
    promoted to the oldest generation whenever a young collection meets them, so with CPython's defaults a full
    collection ran every ~12 s and, with 5,000 waiters, stopped the process for 1.2 s (bench/run.py idle-polls).
    Freezing what the import made (Django, the URL conf, the models) takes it out of every pass; collecting the
    young generation every 50,000 allocations instead of 700 promotes far fewer short-lived request objects.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


tune_garbage_collector()
