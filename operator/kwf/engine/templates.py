"""``{{ params.x }}``, ``{{ state.y.z }}`` and ``{{ steps.s.output }}`` in a step's spec.

Templates are data lookups, never code: a path into params, the shared state
or another step's phase and output. They are rendered into the parsed spec,
one string at a time, so a value can never add fields or rewrite the step,
and a rendered value is not read again (a ``{{`` in it stays as it is).

Rendering is bounded while it happens: a step stops at a size budget, before
a template repeated over a large value can build hundreds of megabytes. In a
URL (``http.url``, ``llm.baseURL``) the scheme and host are written out and
templates fill only the path and query, percent-encoded.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

from kwf.api import Step
from kwf.engine.memo import by_identity

JSON = Any

#: Fields of a step that are structure, not data: they are never rendered.
NOT_RENDERED = frozenset({"name", "dependsOn", "when", "onFailure"})

#: Fields whose value is any JSON: a template that is the whole string keeps its type there.
_JSON_FIELDS = frozenset({("http", "body")})
#: Fields that say where a step connects: templates may fill only their path and query.
URL_FIELDS = frozenset({("http", "url"), ("llm", "baseURL")})
#: A URL's scheme and host, written out: ``https://api.example.test/``.
_ORIGIN = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#{}]+[/?#]")

_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
#: What looks like a lookup is one; anything else between braces (a Python
#: f-string's ``{{x}}``, a shell or Go template) is left as text.
_LOOKUP = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]*)+$")
_ROOTS = ("params", "state", "steps")


class TemplateError(ValueError):
    """A template that does not parse or cannot be rendered."""


@dataclasses.dataclass(frozen=True)
class Template:
    """A string cut into literal text and lookups: ``parts[i]`` is text or a path tuple."""

    source: str
    parts: tuple[str | tuple[str, ...], ...]

    @property
    def whole(self) -> tuple[str, ...] | None:
        """The path when the string is a single template and nothing else."""
        if len(self.parts) == 1 and isinstance(self.parts[0], tuple):
            return self.parts[0]
        return None


@functools.lru_cache(maxsize=16384)
def parse(text: str) -> Template | None:
    """The template in ``text``, or None when it has none; raises TemplateError."""
    if "{{" not in text:
        return None
    parts: list[str | tuple[str, ...]] = []
    literal = ""
    position = 0
    for match in _TEMPLATE.finditer(text):
        path = _parse_path(match.group(0), match.group(1).strip())
        if path is None:
            continue
        literal += text[position : match.start()]
        if literal:
            parts.append(literal)
            literal = ""
        parts.append(path)
        position = match.end()
    if not parts:
        return None
    if position < len(text):
        parts.append(text[position:])
    return Template(text, tuple(parts))


def _parse_path(template: str, path: str) -> tuple[str, ...] | None:
    if path in _ROOTS:
        raise TemplateError(f"{template!r}: name a key, e.g. {{{{ {path}.<key> }}}}")
    if not _LOOKUP.match(path):
        return None
    segments = tuple(path.split("."))
    if segments[0] not in _ROOTS:
        raise TemplateError(
            f"{template!r}: a template reads params.<key>, state.<key> or steps.<step>.output, "
            f"not {segments[0]!r}"
        )
    if "" in segments:
        raise TemplateError(f"{template!r}: an empty key in the path")
    if segments[0] == "steps" and (len(segments) < 3 or segments[2] not in ("output", "phase")):
        raise TemplateError(f"{template!r}: a step is read as steps.<step>.output or steps.<step>.phase")
    return segments


def _strings(value: JSON, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if path or key not in NOT_RENDERED:
                yield from _strings(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, str(index)))


def field_name(path: tuple[str, ...]) -> str:
    """``http.headers.Accept``, ``script.source``, ``llm.messages[0].content``."""
    text = ""
    for segment in path:
        text += f"[{segment}]" if segment.isdigit() else (f".{segment}" if text else segment)
    return text


def problems(step: Step) -> list[str]:
    """What does not parse among the step's templates, each naming step, field and text."""
    found = []
    for path, text in _strings(step.dump(), ()):
        try:
            template = parse(text)
        except TemplateError as error:
            found.append(f"step {step.name}: {field_name(path)}: {error}")
            continue
        if template is not None and path in URL_FIELDS:
            why = url_problem(template)
            if why:
                found.append(f"step {step.name}: {field_name(path)}: {why}")
    return found


def url_problem(template: Template) -> str | None:
    """Why a URL's templates could change where it points, or None.

    Only what follows the host may come from a template: ``https://api.test/{{ params.path }}``.
    """
    first = template.parts[0]
    if isinstance(first, str) and _ORIGIN.match(first):
        return None
    return (
        f"{template.source!r}: write the scheme and host out (https://host/...); "
        "a template may fill only the path and query of a URL"
    )


def _url_value(text: str, in_query: bool) -> str:
    """A value in a URL, percent-encoded so that it stays one path or query value."""
    if in_query:
        return quote(text, safe="")
    encoded = quote(text, safe="/")
    # "." and ".." would walk the path up; encoded, they are names
    return "/".join(part.replace(".", "%2E") if part in (".", "..") else part for part in encoded.split("/"))


@by_identity(maxsize=65536)
def has_templates(step: Step) -> bool:
    """Whether rendering could change anything (cached per step object)."""
    return any(parse(text) is not None for _, text in _strings(step.dump(), ()))


def lookup(data: Mapping[str, JSON], path: tuple[str, ...]) -> JSON:
    """The value at ``path`` in ``data``; raises TemplateError naming the missing key."""
    value: JSON = data
    for depth, key in enumerate(path):
        if isinstance(value, Mapping) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            where = ".".join(path[:depth]) or "the template data"
            raise TemplateError(f"no key {key!r} in {where} (template {{{{ {'.'.join(path)} }}}})")
    if isinstance(value, Mapping) and TRUNCATED in value:
        raise TemplateError(
            f"{'.'.join(path[:2])} was too large to keep ({value[TRUNCATED]}); use saveAs to pass it on"
        )
    return value


#: The key of an output kept only as a preview (see kwf.engine.plan).
TRUNCATED = "$truncated"


def as_text(value: JSON) -> str:
    """A value inside a string: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


#: The most a step may grow to when its templates are filled in (see Limits.rendered_step_bytes).
RENDERED_STEP_BYTES = 256 * 1024


class _Budget:
    """The bytes a step's rendering may still write; counted as it writes them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.sizes: dict[int, int] = {}  # a value's JSON size, by identity, within one rendering

    def take(self, text: str, path: tuple[str, ...]) -> None:
        self.used += len(text) if text.isascii() else len(text.encode())
        self._check(path)

    def take_value(self, value: JSON, path: tuple[str, ...]) -> None:
        size = self.sizes.get(id(value))
        if size is None:
            size = _json_bytes(value, self.limit - self.used + 1)
            self.sizes[id(value)] = size
        self.used += size
        self._check(path)

    def _check(self, path: tuple[str, ...]) -> None:
        if self.used > self.limit:
            raise TemplateError(
                f"rendering passed {self.used:,} bytes, over the limit of "
                f"{self.limit:,} bytes for a rendered step; pass large values through "
                "$KWF_STATE or $KWF_PARAMS instead"
            )


def _json_bytes(value: JSON, cap: int) -> int:
    """The UTF-8 JSON size of ``value``, or a figure over ``cap`` as soon as it passes it."""
    if isinstance(value, str):
        return len(value) + 2 if value.isascii() else len(value.encode()) + 2
    if isinstance(value, Mapping):
        total = 2
        for key, item in value.items():
            total += len(str(key)) + 4 + _json_bytes(item, cap - total)
            if total > cap:
                return total
        return total
    if isinstance(value, list):
        total = 2
        for item in value:
            total += 1 + _json_bytes(item, cap - total)
            if total > cap:
                return total
        return total
    return len(json.dumps(value))


def render_string(
    text: str,
    data: Mapping[str, JSON],
    keep_type: bool = False,
    *,
    url: bool = False,
    budget: _Budget | None = None,
    path: tuple[str, ...] = (),
) -> JSON:
    """``text`` with its templates filled in from ``data`` (params, state, steps).

    ``url``: values are percent-encoded, and only a URL with its scheme and
    host written out is rendered. ``budget`` stops the rendering as it passes it.
    """
    template = parse(text)
    if template is None:
        return text
    if url:
        why = url_problem(template)
        if why:
            raise TemplateError(why)
    whole = template.whole
    if keep_type and whole is not None:
        value = lookup(data, whole)
        if budget is not None:
            budget.take_value(value, path)
        return value
    pieces: list[str] = []
    in_query = False
    for part in template.parts:
        if isinstance(part, str):
            piece = part
            in_query = in_query or "?" in part or "#" in part
        else:
            piece = as_text(lookup(data, part))
            if url:
                piece = _url_value(piece, in_query)
        if budget is not None:
            budget.take(piece, path)
        pieces.append(piece)
    return "".join(pieces)


def _render(value: JSON, data: Mapping[str, JSON], path: tuple[str, ...], budget: _Budget) -> JSON:
    if isinstance(value, str):
        keep_type = path[:2] in _JSON_FIELDS
        try:
            return render_string(value, data, keep_type, url=path in URL_FIELDS, budget=budget, path=path)
        except TemplateError as error:
            raise TemplateError(f"{field_name(path)}: {error}") from None
    if isinstance(value, Mapping):
        return {
            key: item if not path and key in NOT_RENDERED else _render(item, data, (*path, key), budget)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_render(item, data, (*path, str(index)), budget) for index, item in enumerate(value)]
    return value


def render_step(step: Step, data: Mapping[str, JSON], limit: int = RENDERED_STEP_BYTES) -> Step:
    """``step`` with every template filled in; raises TemplateError naming the step and field.

    ``data`` holds ``params``, ``state`` and ``steps`` (``steps.<name>.output``
    and ``.phase``); it may be a lazy mapping, only the paths used are read.
    The strings its templates make may hold ``limit`` bytes in all: rendering
    stops as soon as they pass it.
    """
    if not has_templates(step):
        return step
    try:
        rendered = _render(step.dump(), data, (), _Budget(limit))
    except TemplateError as error:
        raise TemplateError(f"step {step.name}: {error}") from None
    try:
        return Step.model_validate(rendered)
    except ValueError as error:
        raise TemplateError(f"step {step.name}: the rendered spec is not valid: {error}") from None
