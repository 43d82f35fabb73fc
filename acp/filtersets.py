import django_filters

from acp.models import Device, Project


class DeviceFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=[("online", "online"), ("offline", "offline")], method="filter_status")

    class Meta:
        model = Device
        fields = ["status"]

    def filter_status(self, queryset, name, value):
        return queryset.online() if value == "online" else queryset.offline()


class ProjectFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(field_name="name", lookup_expr="icontains", help_text="Part of the name.")

    class Meta:
        model = Project
        fields = ["q"]
