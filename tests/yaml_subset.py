"""A strict reader for the small part of YAML the compose files use (no YAML package needed).

Block mappings and block lists by indentation, comments on their own lines, plain scalars,
double-quoted scalars and JSON-style flow lists. Anything else (tabs, anchors, inline comments,
a key twice, uneven indentation) is refused with its line number, so a file this reads is
also one any YAML parser reads the same way.
"""

from __future__ import annotations

import json
import re
from typing import Any

_KEY = re.compile(r"^([A-Za-z0-9_.-]+):(?: (.+))?$")
_REFUSED = ("&", "*", "!", "|", ">", "{", "'", "%", "@", "`")


class YamlSubsetError(ValueError):
    """The text is outside the subset (or not YAML at all)."""


def load(text: str) -> Any:
    """The document's value: dicts, lists and strings."""
    lines: list[tuple[int, str, int]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if "\t" in raw:
            raise YamlSubsetError(f"line {number}: a tab")
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if " #" in stripped:
            raise YamlSubsetError(f"line {number}: an inline comment")
        lines.append((len(raw) - len(raw.lstrip(" ")), stripped, number))
    if not lines:
        return None
    value, end = _block(lines, 0, lines[0][0])
    if end != len(lines):
        raise YamlSubsetError(f"line {lines[end][2]}: indented out of its block")
    return value


def _block(lines: list[tuple[int, str, int]], start: int, indent: int) -> tuple[Any, int]:
    if lines[start][1].startswith("- "):
        return _list(lines, start, indent)
    return _mapping(lines, start, indent)


def _list(lines: list[tuple[int, str, int]], start: int, indent: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    i = start
    while i < len(lines) and lines[i][0] == indent:
        _, content, number = lines[i]
        if not content.startswith("- "):
            raise YamlSubsetError(f"line {number}: a list item expected")
        items.append(_scalar(content[2:].strip(), number))
        i += 1
    if i < len(lines) and lines[i][0] > indent:
        raise YamlSubsetError(f"line {lines[i][2]}: nested under a list item")
    return items, i


def _mapping(
    lines: list[tuple[int, str, int]], start: int, indent: int
) -> tuple[dict[str, Any], int]:
    found: dict[str, Any] = {}
    i = start
    while i < len(lines) and lines[i][0] == indent:
        _, content, number = lines[i]
        match = _KEY.match(content)
        if match is None:
            raise YamlSubsetError(f"line {number}: `key: value` expected, got {content!r}")
        key, rest = match.group(1), match.group(2)
        if key in found:
            raise YamlSubsetError(f"line {number}: {key} twice")
        i += 1
        if rest is not None:
            found[key] = _scalar(rest.strip(), number)
        elif i < len(lines) and lines[i][0] > indent:
            found[key], i = _block(lines, i, lines[i][0])
        else:
            found[key] = None
    if i < len(lines) and lines[i][0] > indent:
        raise YamlSubsetError(f"line {lines[i][2]}: indented more than its neighbours")
    return found, i


def _scalar(text: str, number: int) -> Any:
    if text.startswith(('"', "[")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise YamlSubsetError(f"line {number}: {error}") from None
    if text.startswith(_REFUSED) or ": " in text or text.endswith(":"):
        raise YamlSubsetError(f"line {number}: outside the subset: {text!r}")
    return text
