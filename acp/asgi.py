"""ASGI entry point: the production server model (uvicorn), so long-polls wait without a thread each."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "acp.settings")
django.setup(set_prefix=False)  # as django.core.asgi.get_asgi_application() does

from acp.serving.handler import asgi_application  # noqa: E402 - needs the apps loaded
from acp.shutdown import GracefulShutdown  # noqa: E402

# ACP_SERVING picks the handler (acp/serving/): the optimised one by default, or Django's stock one. In both, SIGTERM
# answers every waiting long-poll at once (acp/shutdown.py).
application = GracefulShutdown(asgi_application())
