from rest_framework.routers import SimpleRouter

from acp.api import credential_views, views

router = SimpleRouter(trailing_slash=False, use_regex_path=False)
router.register("projects", views.ProjectViewSet)
router.register("environments", views.EnvironmentViewSet)
router.register("devices", views.DeviceViewSet)
router.register("local-runner-pairing-tokens", credential_views.PairingTokenViewSet)
router.register("api-keys", credential_views.ApiKeyViewSet)

urlpatterns = router.urls
