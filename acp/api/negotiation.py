"""Content negotiation whose refusal says what the endpoint serves, in the JSON error shape.

A view that streams lists its streaming renderer in `renderer_classes`; negotiation then accepts
`text/event-stream` for it, and for every other view the refusal names the media types it does serve.
"""

from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation


class JsonContentNegotiation(DefaultContentNegotiation):
    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable as exc:
            served = ", ".join(sorted({renderer.media_type for renderer in renderers}))
            asked = request.META.get("HTTP_ACCEPT", "")
            raise NotAcceptable(
                f"This endpoint answers {served} only, not {asked!r}: it does not stream; send Accept: {served}."
            ) from exc
