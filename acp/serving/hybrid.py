"""A base for the project's own middleware: it runs in the server's mode, sync or async, in both serving modes."""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction


class HybridMiddleware:
    """Middleware that runs in the server's own mode. Under ASGI a sync-only middleware would park every
    request on a thread until the (async) view returns: a long-poll would hold a thread while it waits.

    Subclasses implement `before(request)` (a response to answer early, or None) and `after(request, response)`.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self._is_async = iscoroutinefunction(get_response)
        if self._is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self._is_async:
            return self._acall(request)
        early = self.before(request)
        if early is not None:
            return early
        return self.after(request, self.get_response(request))

    async def _acall(self, request):
        early = self.before(request)
        if early is not None:
            return early
        return self.after(request, await self.get_response(request))

    def before(self, request):
        return None

    def after(self, request, response):
        return response
