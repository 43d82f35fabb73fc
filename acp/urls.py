from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from acp.api.views import health, healthz, ready

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("v1/health", health, name="health"),
    path("v1/ready", ready, name="ready"),
    path("v1/", include("acp.api.urls")),
    path("v1/", include("bindings.api.urls")),
    path("v1/", include("commands.api.urls")),
    path("api/v1/", include("sessions.api.urls")),
]

handler404 = "acp.api.errors.api_404_view"
handler500 = "acp.api.errors.api_500_view"
