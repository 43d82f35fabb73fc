import django_filters

from acp.models import Device


class DeviceFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=[("online", "online"), ("offline", "offline")], method="filter_status")

    class Meta:
        model = Device
        fields = ["status"]

    def filter_status(self, queryset, name, value):
        return queryset.online() if value == "online" else queryset.offline()
