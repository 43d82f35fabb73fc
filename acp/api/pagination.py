"""The list envelope of both families: {"object": "list", "data", "total_count", "has_more"}."""

from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.response import Response

from acp.api.serializers import Serializer

DEFAULT_LIMIT = 50
MAX_LIMIT = 100


class PageParamsSerializer(Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=MAX_LIMIT, default=DEFAULT_LIMIT)
    offset = serializers.IntegerField(min_value=0, default=0)


def parse_page_params(query_params) -> tuple[int, int]:
    params = PageParamsSerializer(data={k: query_params[k] for k in ("limit", "offset") if k in query_params})
    if not params.is_valid():
        raise ValidationError(params.errors)
    return params.validated_data["limit"], params.validated_data["offset"]


def list_envelope(data, total_count: int, has_more: bool) -> dict:
    return {"object": "list", "data": data, "total_count": total_count, "has_more": has_more}


class ListEnvelopePagination(BasePagination):
    """limit (1–100, default 50) and offset; out-of-range values are a 400, not silently clamped.

    A view with `returns_whole_list = True` answers a request without `limit` with every row: its clients (the
    SDK's `environments.list()`, `projects.list()`) send none and take the answer as the complete list.
    """

    def paginate_queryset(self, queryset, request, view=None):
        self.limit, self.offset = parse_page_params(request.query_params)
        self.total_count = queryset.count()
        if self.offset >= self.total_count:
            return []
        if "limit" not in request.query_params and getattr(view, "returns_whole_list", False):
            return list(queryset[self.offset :])
        return list(queryset[self.offset : self.offset + self.limit])

    def get_paginated_response(self, data):
        has_more = self.offset + len(data) < self.total_count
        return Response(list_envelope(data, self.total_count, has_more))

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["object", "data", "total_count", "has_more"],
            "properties": {
                "object": {"type": "string", "enum": ["list"]},
                "data": schema,
                "total_count": {"type": "integer", "minimum": 0},
                "has_more": {"type": "boolean"},
            },
        }

    def get_schema_operation_parameters(self, view):
        limit_schema = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
        if getattr(view, "returns_whole_list", False):
            limit_description = f"Page size, 1–{MAX_LIMIT} (default: the whole list)."
        else:
            limit_description = f"Page size, 1–{MAX_LIMIT} (default {DEFAULT_LIMIT})."
            limit_schema["default"] = DEFAULT_LIMIT
        return [
            {
                "name": "limit",
                "required": False,
                "in": "query",
                "description": limit_description,
                "schema": limit_schema,
            },
            {
                "name": "offset",
                "required": False,
                "in": "query",
                "description": "How many objects to skip.",
                "schema": {"type": "integer", "minimum": 0, "default": 0},
            },
        ]
