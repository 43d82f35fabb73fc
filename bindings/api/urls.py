from rest_framework.routers import SimpleRouter

from bindings.api import views

router = SimpleRouter(trailing_slash=False, use_regex_path=False)
router.register("workspace-bindings", views.WorkspaceBindingViewSet)
# The path parameter keeps the public API's documented name, {bindingId}.
router.register("workspace-bindings/<uuid:bindingId>/push-sessions", views.PushSessionViewSet, basename="push-session")
router.register("workspace-bindings/<uuid:bindingId>/pull-sessions", views.PullSessionViewSet, basename="pull-session")

urlpatterns = router.urls
