import django_filters

from bindings.filtersets import UUIDOrNoneFilter
from commands.choices import CommandStatus, CommandType, SessionStatus, ThreadStatus
from commands.models import ControlCommand, LocalSession, Thread


class ThreadFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=ThreadStatus.choices)
    environmentId = django_filters.UUIDFilter(field_name="environment_id")
    projectId = UUIDOrNoneFilter(field_name="project_id", help_text='A project id, or "none": threads without one.')

    class Meta:
        model = Thread
        fields = ["status", "environmentId", "projectId"]


class LocalSessionFilterSet(django_filters.FilterSet):
    deviceId = django_filters.UUIDFilter(field_name="device_id")
    status = django_filters.ChoiceFilter(choices=SessionStatus.choices)

    class Meta:
        model = LocalSession
        fields = ["deviceId", "status"]


class ControlCommandFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=CommandStatus.choices)
    commandType = django_filters.ChoiceFilter(field_name="command_type", choices=CommandType.choices)

    class Meta:
        model = ControlCommand
        fields = ["status", "commandType"]
