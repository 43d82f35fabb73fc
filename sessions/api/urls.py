import re

from django.urls import path
from rest_framework.routers import SimpleRouter

from acp.api.longpoll import long_poll_view
from acp.api.sse import event_stream_view
from acp.serving.fast_streams import FastStream
from sessions.api import views
from sessions.api.channel import channels_open

router = SimpleRouter(trailing_slash=False, use_regex_path=False)
router.register("workspaces", views.WorkspaceViewSet)

# The waiting endpoints (a launch, the daemons' fetch) are async views; they come before the router's URLs.
urlpatterns = [
    path(
        "workspaces/<uuid:workspace_id>/sessions",
        long_poll_view(views.WorkspaceLaunchViewSet.as_view({"get": "list", "post": "launch"})),
        name="workspace-sessions",
    ),
    path(
        "workspaces/<uuid:workspace_id>/sessions/<uuid:launch_id>",
        views.WorkspaceLaunchViewSet.as_view({"get": "retrieve"}),
        name="workspace-session-detail",
    ),
    path(
        "machines/<uuid:machine_id>/launches",
        long_poll_view(views.MachineLaunchViewSet.as_view({"get": "poll"})),
        name="machine-launches",
    ),
    path(
        "machines/<uuid:machine_id>/stream",
        event_stream_view(views.MachineChannelViewSet.as_view({"get": "stream"})),
        name="machine-stream",
    ),
    path(
        "machines/<uuid:machine_id>/launches/<uuid:launch_id>/ack",
        views.MachineLaunchViewSet.as_view({"post": "acknowledge"}),
        name="machine-launch-ack",
    ),
    *router.urls,
]

# A daemon connecting to its machine's channel (its plain case) is served without Django's handler, which cost most
# of a connect (acp/serving/fast_streams.py): "machine-stream" above, under acp/urls.py's "api/v1/".
MACHINE_CHANNEL_FAST = FastStream(
    pattern=re.compile(r"/api/v1/machines/[^/]+/stream"),
    view=views.MachineChannelViewSet,
    action="stream",
    open=channels_open,
)
