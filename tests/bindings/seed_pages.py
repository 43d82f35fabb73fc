"""Reads the fields listed in the seed API pages (../shared/seeds/), in either of their two table layouts.

Page 000 uses pipe tables (`| pullSession.id | string | No | … |`); page 001 lost its cell separators
(`pushSession.idstringNoUnique identifier.`), so the name is what comes before the type.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"
PULL_PAGE = SEEDS / "000_0fa591ba8ec73534.txt"
PUSH_PAGE = SEEDS / "001_0f0277c7f9ef9b19.txt"

_TYPES = r"(?:string|object|boolean|integer|number|array|prepared)"
_JOINED_ROW = re.compile(rf"^([A-Za-z][A-Za-z.]*?){_TYPES}(?:Yes|No|\s|\|)")
_RESPONSE_HEADER = re.compile(r"^(\d{3})\D")


@dataclass
class SeedPage:
    body_fields: dict[str, bool] = field(default_factory=dict)  # name -> required
    responses: dict[int, list[str]] = field(default_factory=dict)  # status -> dotted field names


def _row(line: str) -> tuple[str, str] | None:
    """(field name, rest of the row) of a table row, or None for any other line."""
    line = line.strip()
    if line.startswith("|"):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"[A-Za-z][A-Za-z.]*", cells[0]) and cells[0] not in ("Field", "Name"):
            return cells[0], "|".join(cells[1:])
        return None
    match = _JOINED_ROW.match(line)
    if match:
        return match.group(1), line[len(match.group(1)) :]
    return None


def read_seed_page(path: Path) -> SeedPage:
    page = SeedPage()
    section = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("Body schema"):
            section = "body"
            continue
        if line.startswith("What the API returns"):
            section = "responses"
            continue
        header = _RESPONSE_HEADER.match(line)
        if header and (section == "responses" or isinstance(section, int)):
            section = int(header.group(1))
            page.responses[section] = []
            continue
        row = _row(line)
        if row is None:
            continue
        name, rest = row
        if section == "body":
            page.body_fields[name] = bool(re.match(r"^\|?\s*\w+\s*\|?\s*Yes|^\w+?Yes", rest))
        elif isinstance(section, int):
            page.responses[section].append(name)
    return page


def response_shape(page: SeedPage, status: int) -> tuple[set[str], dict[str, set[str]]]:
    """Top-level keys of a documented response, and the keys of each documented nested object."""
    top, nested = set(), {}
    for name in page.responses[status]:
        head, _, tail = name.partition(".")
        top.add(head)
        if tail:
            nested.setdefault(head, set()).add(tail)
    return top, nested


def status_values(path: Path) -> list[str]:
    """The documented values of `<x>Session.status` (`prepared | superseded | cancelled`)."""
    for line in path.read_text().splitlines():
        if "Session.status" in line:
            match = re.search(r"(prepared(?:\s*\|\s*[a-z]+)*)", line)
            return [value.strip() for value in match.group(1).split("|")]
    raise AssertionError(f"no status row in {path.name}")
