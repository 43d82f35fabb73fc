"""JSON fields in the support console: indented, escaped, read-only."""

import json

from django.contrib import admin
from django.utils.html import format_html

PRETTY_JSON_MAX_CHARS = 200_000


def pretty_json(value) -> str:
    """A JSON document as indented, escaped HTML; very large documents are cut (the API returns them whole)."""
    if value is None:
        return "—"
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    if len(text) > PRETTY_JSON_MAX_CHARS:
        text = text[:PRETTY_JSON_MAX_CHARS] + f"\n… ({len(text) - PRETTY_JSON_MAX_CHARS} more characters)"
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)


def pretty_json_field(name: str):
    """An admin display method showing model field `name` through `pretty_json`; use it in readonly_fields."""

    @admin.display(description=name.replace("_", " "))
    def display(self, obj):
        return pretty_json(getattr(obj, name))

    display.__name__ = f"{name}_pretty"
    return display
