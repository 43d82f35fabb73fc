"""The base of every `/v1` object endpoint: ownership, device scope, envelopes, the 201/200 split."""

from rest_framework import mixins, status, viewsets
from rest_framework.response import Response

from acp.api.idempotency import idempotent
from acp.api.permissions import token_device_id
from acp.references import delete_locked


def scope_to_owner(queryset, request, *, owner_field="user", device_field=None):
    """Only the caller's rows; for a device token, only its device's rows (none if the model has no device)."""
    queryset = queryset.filter(**{owner_field: request.user})
    device_id = token_device_id(request)
    if device_id is not None:
        if device_field is None:
            return queryset.none()
        queryset = queryset.filter(**{device_field: device_id})
    return queryset


class OwnedViewSetMixin:
    """Filters to the caller's rows; single objects come back as {envelope_key: {...}}.

    A domain error naming a row (a 409's current state) is described by `describe`: the view's own model with its
    serializer, other models through `related_envelopes` ({model: (key, serializer class)}).
    """

    envelope_key: str | None = None
    owner_field = "user"
    device_field: str | None = None
    lookup_value_converter = "uuid"
    device_token_actions: tuple[str, ...] = ()
    daemon_actions: tuple[str, ...] = ()  # counted in the token's "daemon" rate-limit bucket (acp.api.throttling)
    related_envelopes: dict = {}

    def get_queryset(self):
        return scope_to_owner(
            super().get_queryset(), self.request, owner_field=self.owner_field, device_field=self.device_field
        )

    def wrap(self, data):
        return {self.envelope_key: data} if self.envelope_key else data

    def describe(self, obj) -> dict:
        """`details` of an error about `obj`: the object as this API shows it, under its envelope key."""
        envelope = self.related_envelopes.get(type(obj))
        if envelope is not None:
            key, serializer_class = envelope
            return {key: serializer_class(obj, context=self.get_serializer_context()).data}
        return self.wrap(self.get_serializer(obj).data)

    def retrieve(self, request, *args, **kwargs):
        return Response(self.wrap(self.get_serializer(self.get_object()).data))

    def perform_create(self, serializer):
        serializer.save(user=self.request.user)


class OwnedModelViewSet(
    OwnedViewSetMixin,
    mixins.ListModelMixin,
    viewsets.GenericViewSet,
):
    """list, create, retrieve, partial update (PATCH) and delete of an owned model."""

    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    @idempotent
    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        self.perform_create(serializer)
        return Response(self.wrap(serializer.data), status=status.HTTP_201_CREATED)

    def partial_update(self, request, *args, **kwargs):
        serializer = self.get_serializer(self.get_object(), data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        serializer.save()
        return Response(self.wrap(serializer.data))

    def destroy(self, request, *args, **kwargs):
        delete_locked(self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
