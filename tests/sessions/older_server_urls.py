"""The URL conf of tests/sessions/older_server.py: the machine channel's route shadowed by a 404, the rest as is."""

from django.http import Http404
from django.urls import include, path


def no_channel(request, machine_id):
    raise Http404


urlpatterns = [
    path("api/v1/machines/<uuid:machine_id>/stream", no_channel),
    path("", include("acp.urls")),
]

handler404 = "acp.api.errors.api_404_view"
handler500 = "acp.api.errors.api_500_view"
