"""The support console: Django's admin with a dashboard of counts on its index page."""

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
