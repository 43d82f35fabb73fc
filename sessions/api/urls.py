from django.urls import path
from rest_framework.routers import SimpleRouter

from acp.api.longpoll import long_poll_view
from acp.api.sse import event_stream_view
from sessions.api import views

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
