"""A JSON parser that refuses NUL characters anywhere in the document (PostgreSQL cannot store them)."""

import json

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
        if contains_nul(data):
            raise ParseError("NUL characters (\\u0000) are not allowed anywhere in the body.")
        return data


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def contains_nul(value) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
