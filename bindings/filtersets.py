import uuid

import django_filters
from django import forms
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from bindings.choices import SyncSessionStatus
from bindings.models import SyncSession, WorkspaceBinding

NO_PROJECT = "none"


class UUIDOrNoneField(forms.Field):
    """A UUID, or the word "none" (no related object)."""

    default_error_messages = {"invalid": 'Enter a valid UUID or "none".'}

    def to_python(self, value):
        if value in self.empty_values:
            return None
        if value == NO_PROJECT:
            return NO_PROJECT
        try:
            return uuid.UUID(value)
        except (ValueError, TypeError, AttributeError) as exc:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from exc


@extend_schema_field(OpenApiTypes.STR)
class UUIDOrNoneFilter(django_filters.Filter):
    field_class = UUIDOrNoneField

    def filter(self, qs, value):
        if value is None:
            return qs
        if value == NO_PROJECT:
            return qs.filter(**{f"{self.field_name}__isnull": True})
        return qs.filter(**{self.field_name: value})


class WorkspaceBindingFilterSet(django_filters.FilterSet):
    deviceId = django_filters.UUIDFilter(field_name="device_id")
    environmentId = django_filters.UUIDFilter(field_name="environment_id")
    projectId = UUIDOrNoneFilter(field_name="project_id", help_text='A project id, or "none" for bindings without one.')

    class Meta:
        model = WorkspaceBinding
        fields = ["deviceId", "environmentId", "projectId"]


class SyncSessionFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=SyncSessionStatus.choices)

    class Meta:
        model = SyncSession
        fields = ["status"]
