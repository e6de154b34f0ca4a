"""``{{ params.x }}``, ``{{ state.y.z }}`` and ``{{ steps.s.output }}`` in a step's spec.

Templates are data lookups, never code: a path into params, the shared state
or another step's phase and output. They are rendered into the parsed spec,
one string at a time, so a value can never add fields or rewrite the step,
and a rendered value is not read again (a ``{{`` in it stays as it is).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from kwf.api import Step
from kwf.engine.memo import by_identity

JSON = Any

#: Fields of a step that are structure, not data: they are never rendered.
NOT_RENDERED = frozenset({"name", "dependsOn", "when", "onFailure"})

#: Fields whose value is any JSON: a template that is the whole string keeps its type there.
_JSON_FIELDS = frozenset({("http", "body")})

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
            parse(text)
        except TemplateError as error:
            found.append(f"step {step.name}: {field_name(path)}: {error}")
    return found


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


def render_string(text: str, data: Mapping[str, JSON], keep_type: bool = False) -> JSON:
    """``text`` with its templates filled in from ``data`` (params, state, steps)."""
    template = parse(text)
    if template is None:
        return text
    whole = template.whole
    if keep_type and whole is not None:
        return lookup(data, whole)
    return "".join(part if isinstance(part, str) else as_text(lookup(data, part)) for part in template.parts)


def _render(value: JSON, data: Mapping[str, JSON], path: tuple[str, ...]) -> JSON:
    if isinstance(value, str):
        keep_type = path[:2] in _JSON_FIELDS
        try:
            return render_string(value, data, keep_type)
        except TemplateError as error:
            raise TemplateError(f"{field_name(path)}: {error}") from None
    if isinstance(value, Mapping):
        return {
            key: item if not path and key in NOT_RENDERED else _render(item, data, (*path, key))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_render(item, data, (*path, str(index))) for index, item in enumerate(value)]
    return value


def render_step(step: Step, data: Mapping[str, JSON]) -> Step:
    """``step`` with every template filled in; raises TemplateError naming the step and field.

    ``data`` holds ``params``, ``state`` and ``steps`` (``steps.<name>.output``
    and ``.phase``); it may be a lazy mapping, only the paths used are read.
    """
    if not has_templates(step):
        return step
    try:
        rendered = _render(step.dump(), data, ())
    except TemplateError as error:
        raise TemplateError(f"step {step.name}: {error}") from None
    try:
        return Step.model_validate(rendered)
    except ValueError as error:
        raise TemplateError(f"step {step.name}: the rendered spec is not valid: {error}") from None
