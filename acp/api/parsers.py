"""A JSON parser that refuses NUL characters anywhere in the document (PostgreSQL cannot store them) and
documents nested deeper than ACP_MAX_JSON_DEPTH."""

import json

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read() if stream is not None else b""
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ParseError(f"Malformed JSON: {exc}") from exc
        problem = document_problem(data, settings.ACP_MAX_JSON_DEPTH)
        if problem:
            raise ParseError(problem)
        return data


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def document_problem(value, max_depth: int) -> str | None:
    """Why the parsed document cannot be accepted: a NUL character, or nesting deeper than `max_depth` (Python's
    json parses up to ~1,000 levels, but encoding it again for the database would exceed the recursion limit)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "NUL characters (\\u0000) are not allowed anywhere in the body."
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                return f"The JSON document is nested deeper than {max_depth} levels."
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return None
