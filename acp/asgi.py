"""ASGI entry point: the production server model (uvicorn), so long-polls wait without a thread each."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "acp.settings")
django.setup(set_prefix=False)  # as django.core.asgi.get_asgi_application() does

from acp.asgi_guards import RequestBodyGuard  # noqa: E402 - needs the apps loaded
from acp.serving.handler import asgi_application  # noqa: E402 - needs the apps loaded
from acp.shutdown import GracefulShutdown  # noqa: E402

# ACP_SERVING picks the handler (acp/serving/): the optimised one by default, or Django's stock one. Either way a
# request's headers and body are checked before it reaches Django (acp/asgi_guards.py), and SIGTERM answers every
# waiting long-poll at once (acp/shutdown.py).
application = GracefulShutdown(RequestBodyGuard(asgi_application()))
