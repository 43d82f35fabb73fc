"""API paths over plain HTTP, where HTTPS is required (SECURE_SSL_REDIRECT): a JSON refusal, never a redirect.

API clients do not follow redirects (the SDK's ApiClient reported "HTTP 301"), and following one would have sent
the bearer token in the clear already. Behind a TLS-terminating proxy that sets `X-Forwarded-Proto: https`
(SECURE_PROXY_SSL_HEADER) the request is secure and served.
"""

from django.conf import settings

from acp.api.errors import error_json_response, is_api_path
from acp.api.middleware import HybridMiddleware


class ApiHttpsOnlyMiddleware(HybridMiddleware):
    def before(self, request):
        if settings.SECURE_SSL_REDIRECT and is_api_path(request.path) and not request.is_secure():
            return error_json_response(
                403, "This API is served over HTTPS only: use the https:// URL.", "https_required"
            )
        return None
