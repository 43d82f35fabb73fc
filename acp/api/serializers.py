"""Serializer building blocks shared by every app."""

import weakref

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.functional import cached_property
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.utils.serializer_helpers import BindingDict


class WeaklyBoundFieldsMixin:
    """Bind a serializer's fields to it, and a list's or dict's child to its list, through a weak reference.

    DRF binds each field to its serializer (`field.parent`) while the serializer holds its fields, so every
    serializer that was used is a reference cycle, and the request, view and response it reaches through its
    context go with it: ~200 objects per request that only the cyclic collector frees, in passes of 10–90 ms with
    a worker holding 10,000 machine channels (the tail of a command's create → event, bench/channel.py). Bound
    weakly, they are freed as soon as the request lets go of them. So hold the serializer, not one of its fields:
    once nothing holds it, a field's `parent`, `root` and `context` raise ReferenceError.
    """

    @cached_property
    def fields(self):  # DRF's Serializer.fields, with the serializer held weakly
        fields = BindingDict(weakref.proxy(self))
        for name, field in self.get_fields().items():
            fields[name] = field
            _bind_child_weakly(field)  # a declared `many=True` serializer, a ListField, a DictField
        return fields

    @classmethod
    def many_init(cls, *args, **kwargs):
        many = super().many_init(*args, **kwargs)
        _bind_child_weakly(many)
        return many


def _bind_child_weakly(field) -> None:
    """The child of a ListSerializer, ListField or DictField, bound to it as DRF binds it (`child.parent`), weakly."""
    child = getattr(field, "child", None)
    if child is not None:
        child.parent = weakref.proxy(field)


class Serializer(WeaklyBoundFieldsMixin, serializers.Serializer):
    """The base of every plain serializer here (see WeaklyBoundFieldsMixin)."""


class ModelSerializer(WeaklyBoundFieldsMixin, serializers.ModelSerializer):
    """The base of every model serializer here (see WeaklyBoundFieldsMixin)."""


class ErrorSerializer(Serializer):
    error = serializers.CharField(help_text="A human-readable message.")
    code = serializers.CharField(help_text="A machine code: invalid_request, not_found, conflict, …")
    details = serializers.DictField(help_text="Field errors for 400; context for other codes.")


class OwnedPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    """A reference to one of the caller's own objects; anyone else's id reads as not existing."""

    def get_queryset(self):
        request = self.context["request"]
        return super().get_queryset().filter(user=request.user)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, str | int):
            self.fail("incorrect_type", data_type=type(data).__name__)
        try:
            return super().to_internal_value(data)
        except (ValueError, TypeError, DjangoValidationError):
            self.fail("does_not_exist", pk_value=data)


@extend_schema_field(OpenApiTypes.OBJECT)
class JSONObjectField(serializers.JSONField):
    """A JSON value that must be an object (a dict)."""

    default_error_messages = {"not_object": "Must be a JSON object."}

    def to_internal_value(self, data):
        data = super().to_internal_value(data)
        if not isinstance(data, dict):
            self.fail("not_object")
        return data


class StrictCharField(serializers.CharField):
    """A string, and only a string: numbers and booleans are a wrong type (DRF's CharField would coerce them).

    Kept exactly as sent unless the field asks for `trim_whitespace=True`.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class RejectUnknownFieldsMixin:
    """A body field this serializer does not know is refused (400 naming it), not silently dropped: a client
    that sends it expects it to be acted on. `unknown_field_message` says why ACP has no such field."""

    unknown_field_message = "ACP does not support this field."
    unknown_field_messages: dict[str, str] = {}

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {name: [self.unknown_field_messages.get(name, self.unknown_field_message)] for name in unknown}
                )
        return super().to_internal_value(data)
