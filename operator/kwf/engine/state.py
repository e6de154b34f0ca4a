"""The run's shared state: JSON merge patches (RFC 7386), saveAs paths, sizes.

Functions here never change their arguments: a state handed to a step as its
snapshot stays what it was while later patches make new dicts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

JSON = Any


def merge_patch(target: JSON, patch: JSON) -> JSON:
    """``target`` with the RFC 7386 merge ``patch`` applied (a new value)."""
    if not isinstance(patch, Mapping):
        return patch
    result: dict[str, JSON] = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def merge_all(target: JSON, patches: list[JSON]) -> JSON:
    """``target`` with each patch applied in order."""
    for patch in patches:
        target = merge_patch(target, patch)
    return target


def set_path(state: Mapping[str, JSON], path: str, value: JSON) -> dict[str, JSON]:
    """``state`` with ``value`` at the dotted ``path`` (saveAs), objects made on the way.

    A non-object in the way is replaced: saveAs says where the output belongs.
    """
    head, _, rest = path.partition(".")
    result = dict(state)
    if not rest:
        result[head] = value
        return result
    inner = result.get(head)
    result[head] = set_path(inner if isinstance(inner, Mapping) else {}, rest, value)
    return result


def json_size(value: JSON) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON, as it would sit in the status."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def format_size(size: int) -> str:
    """``300 KiB``, ``1.5 MiB`` or ``512 bytes``."""
    if size < 1024:
        return f"{size} bytes"
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= scale:
            figure = size / scale
            text = f"{figure:.1f}".removesuffix(".0")
            return f"{text} {unit}"
    raise AssertionError("unreachable")


def size_problem(what: str, size: int, limit: int) -> str | None:
    """A message naming both sizes when ``size`` is over ``limit``, else None."""
    if size <= limit:
        return None
    shown, cap = format_size(size), format_size(limit)
    if shown == cap:
        shown, cap = f"{size} bytes", f"{limit} bytes"
    return f"{what} would be {shown}, over the limit of {cap}"
