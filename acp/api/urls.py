from rest_framework.routers import SimpleRouter

from acp.api import views

router = SimpleRouter(trailing_slash=False, use_regex_path=False)
router.register("projects", views.ProjectViewSet)
router.register("environments", views.EnvironmentViewSet)
router.register("devices", views.DeviceViewSet)

urlpatterns = router.urls
