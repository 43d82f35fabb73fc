from django.urls import path
from rest_framework.routers import SimpleRouter

from acp.api.longpoll import long_poll_view
from acp.api.sse import event_stream_view
from commands.api import views

SESSIONS = "threads/<uuid:threadId>/local-sessions"
CONTROL = f"{SESSIONS}/<uuid:localSessionId>/control"

router = SimpleRouter(trailing_slash=False, use_regex_path=False)
router.register("threads", views.ThreadViewSet, basename="thread")
router.register(SESSIONS, views.LocalSessionViewSet, basename="local-session")
router.register(CONTROL, views.ControlCommandViewSet, basename="control-command")

urlpatterns = [
    # The daemon's long-poll: an async view, so a waiting request holds neither a thread nor a connection.
    path(
        f"{CONTROL}/poll",
        long_poll_view(views.ControlCommandViewSet.as_view({"get": "poll"})),
        name="control-command-poll",
    ),
    # Reading may stream (SSE): an async view, so an idle stream holds neither a thread nor a connection.
    path(
        "threads/<uuid:threadId>/events",
        event_stream_view(views.ThreadEventViewSet.as_view({"get": "read"})),
        name="thread-event-list",
    ),
    path(
        "threads/<uuid:threadId>/events/ingest",
        views.ThreadEventViewSet.as_view({"post": "ingest"}),
        name="thread-event-ingest",
    ),
    *router.urls,
]
