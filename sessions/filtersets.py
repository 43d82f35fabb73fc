import django_filters

from sessions.choices import LaunchStatus
from sessions.models import Launch, Workspace


class WorkspaceFilterSet(django_filters.FilterSet):
    project_id = django_filters.UUIDFilter(field_name="project_id")
    default_machine_id = django_filters.UUIDFilter(field_name="default_machine_id")

    class Meta:
        model = Workspace
        fields = ["project_id", "default_machine_id"]


class LaunchFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=LaunchStatus.choices)
    machine_id = django_filters.UUIDFilter(field_name="machine_id")

    class Meta:
        model = Launch
        fields = ["status", "machine_id"]
