"""The support console: Django's admin with a dashboard of counts on its index page."""

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.apps import AdminConfig

from acp.dashboard import dashboard_counts


class AcpAdminSite(admin.AdminSite):
    site_header = "ACP support console"
    site_title = "ACP support"
    index_title = "Dashboard"
    index_template = "admin/acp_index.html"

    def index(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "dashboard": dashboard_counts()}
        return super().index(request, extra_context)


class AcpAdminConfig(AdminConfig):
    default_site = "acp.admin_site.AcpAdminSite"


def client_ip(request) -> str | None:
    """The address a sign-in came from, for django-axes: the connection's, or with ACP_PROXY_COUNT proxies in
    front, the one the outermost of them saw (each proxy appends the address it received from to the header)."""
    proxies = settings.ACP_PROXY_COUNT
    if proxies > 0:
        hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        if len(hops) >= proxies:
            return hops[-proxies]
    return request.META.get("REMOTE_ADDR")
