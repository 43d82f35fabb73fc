"""ASGI entry point: the production server model (uvicorn), so long-polls wait without a thread each."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "acp.settings")
application = get_asgi_application()
