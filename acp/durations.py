"""Command-line durations: `30s`, `15m`, `2h`, `30d`."""

import re
from datetime import timedelta

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_PATTERN = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")


def parse_duration(text: str) -> timedelta:
    match = _PATTERN.match(text or "")
    if not match:
        raise ValueError(f"Invalid duration {text!r}: use a number and a unit, e.g. 30s, 15m, 2h or 30d.")
    amount, unit = match.groups()
    return timedelta(**{_UNITS[unit]: int(amount)})
