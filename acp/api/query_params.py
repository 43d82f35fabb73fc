"""No silent wrong answers from the query string: a parameter an endpoint does not know is a 400 naming it.

A view's known parameters are its filterset's filters, plus `limit`/`offset` when it paginates; a view (or an
action) with parameters of its own passes them as `allowed`.
"""

from rest_framework.exceptions import ValidationError
from rest_framework.filters import BaseFilterBackend

PAGE_PARAMS = frozenset({"limit", "offset"})


def known_query_params(view) -> frozenset[str]:
    names = set()
    filterset_class = getattr(view, "filterset_class", None)
    if filterset_class is not None:
        names |= set(filterset_class.base_filters)
    if getattr(view, "pagination_class", None) is not None:
        names |= PAGE_PARAMS
    return frozenset(names)


def refuse_unknown_query_params(request, view, *, allowed=None) -> None:
    allowed = known_query_params(view) if allowed is None else frozenset(allowed)
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        accepted = ", ".join(sorted(allowed)) or "none"
        message = f"Unknown query parameter: this endpoint accepts {accepted}."
        raise ValidationError({name: [message] for name in unknown})


class KnownQueryParamsFilterBackend(BaseFilterBackend):
    """First of the filter backends: every list (and every lookup through `get_object`) checks its parameters."""

    def filter_queryset(self, request, queryset, view):
        refuse_unknown_query_params(request, view)
        return queryset
