"""Reading the API server's answers so that one object cannot spoil the rest.

A list answer is one JSON document, and one item nested deeper than the
parser reads (the API server itself accepts thousands of levels) would make
the whole list, and with it every object of that kind, unreadable. So a list
or a watch event that fails to parse is read again piece by piece: the
items, and of an item its top-level fields, each on its own. What cannot be
read is kept as an :class:`Unreadable` with what could be (its metadata,
mostly) and a problem that names the field.

The splitting scans the text once with a regular expression that sees only
strings and brackets, with no recursion, so depth costs it nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import pydantic_core

JSON = Any

#: Strings (escapes included) and the structural characters; all else is skipped.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},:]')
_PROBLEM_CAP = 300


@dataclasses.dataclass(frozen=True)
class Unreadable:
    """An object that could not be read whole: what could be, and why not the rest."""

    object: dict[str, JSON]  # the top-level fields that could be read (metadata, mostly)
    problem: str


def problem_of(error: ValueError) -> str:
    text = str(error)
    if "recursion limit" in text:
        return "nested too deeply to read"
    return text[:_PROBLEM_CAP]


def parse(text: str | bytes) -> JSON:
    """The JSON value; ValueError when it cannot be read (too deep, broken)."""
    return pydantic_core.from_json(text)


def _parts(text: str, opening: str) -> Iterator[tuple[str | None, str]]:
    """(key, raw value) of each top-level member of the object (``{``) or array
    (``[``) in ``text``; keys are None for an array. Nested values stay text."""
    depth = 0
    key: str | None = None
    start: int | None = None
    began = False
    for match in _TOKEN.finditer(text):
        token = match.group()
        first = token[0]
        if first == '"':
            if depth == 1 and opening == "{" and start is None and key is None:
                key = str(parse(token))
            continue
        if first in "[{":
            depth += 1
            if depth == 1:
                if first != opening:
                    raise ValueError(f"expected {opening!r}, found {first!r}")
                began = True
                if opening == "[":
                    start = match.end()
            continue
        if first in "]}":
            depth -= 1
            if depth == 0:
                if start is not None and text[start : match.start()].strip():
                    yield key, text[start : match.start()]
                return
            continue
        if depth != 1:
            continue
        if first == ":" and opening == "{":
            start = match.end()
        elif first == ",":
            if start is not None:
                yield key, text[start : match.start()]
            key = None
            start = match.end() if opening == "[" else None
    if not began:
        raise ValueError("no JSON object or array")
    raise ValueError("the JSON text ends early")


def members(text: str) -> Iterator[tuple[str, str]]:
    """(key, raw value) of each member of the JSON object in ``text``."""
    for key, raw in _parts(text, "{"):
        if key is not None:
            yield key, raw


def elements(text: str) -> Iterator[str]:
    """The raw text of each element of the JSON array in ``text``."""
    for _, raw in _parts(text, "["):
        yield raw


def read_object(text: str) -> dict[str, JSON] | Unreadable:
    """One object: parsed whole, or field by field when that fails."""
    try:
        value = parse(text)
    except ValueError as error:
        whole = problem_of(error)
    else:
        if isinstance(value, dict):
            return value
        return Unreadable({}, f"expected a JSON object, found {type(value).__name__}")
    readable: dict[str, JSON] = {}
    problems: list[str] = []
    try:
        for key, raw in members(text):
            try:
                readable[key] = parse(raw)
            except ValueError as error:
                if key == "metadata":
                    readable[key] = _metadata(raw)
                else:
                    problems.append(f"{key}: {problem_of(error)}")
    except ValueError:
        return Unreadable(readable, whole)
    return Unreadable(readable, "; ".join(problems) or whole)


def _metadata(text: str) -> dict[str, JSON]:
    """An object's metadata, but for fields as deep as the object itself
    (``managedFields`` mirrors the shape of every field set): what identifies
    the object is always flat."""
    found: dict[str, JSON] = {}
    with contextlib.suppress(ValueError):
        for key, raw in members(text):
            with contextlib.suppress(ValueError):
                found[key] = parse(raw)
    return found


def read_list(content: bytes) -> tuple[dict[str, JSON], list[Unreadable]]:
    """A list answer: the list with its readable items, and the unreadable ones."""
    try:
        listing = parse(content)
    except ValueError:
        pass
    else:
        if isinstance(listing, dict):
            return listing, []
        raise ValueError(f"a list answer must be a JSON object, not {type(listing).__name__}")
    text = content.decode("utf-8", errors="replace")
    listing = {}
    bad: list[Unreadable] = []
    for key, raw in members(text):
        if key == "items":
            items = []
            for element in elements(raw):
                item = read_object(element)
                if isinstance(item, Unreadable):
                    bad.append(item)
                else:
                    items.append(item)
            listing["items"] = items
        else:
            listing[key] = parse(raw)  # kind, apiVersion, metadata: flat
    return listing, bad


def read_event(line: str | bytes) -> tuple[str, dict[str, JSON], str | None]:
    """A watch event's (type, object, problem): problem is None when it read whole."""
    try:
        event = parse(line)
    except ValueError:
        pass
    else:
        if not isinstance(event, dict):
            raise ValueError("a watch event must be a JSON object")
        return str(event.get("type") or ""), event.get("object") or {}, None
    text = line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line
    kind, found = "", read_object("{}")
    for key, raw in members(text):
        if key == "type":
            kind = str(parse(raw))
        elif key == "object":
            found = read_object(raw)
    if isinstance(found, Unreadable):
        return kind, found.object, found.problem
    return kind, found, None
