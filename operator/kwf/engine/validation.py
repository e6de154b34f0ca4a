"""Everything wrong with a Job or Workflow, each problem at its field.

One function for every reader that must refuse what the API server refuses,
and more: ``kwf lint``, ``kwf submit`` and an admission webhook. It runs the
models (types, bounds, the twins of the CRD's CEL rules, the depth and size
of free-form JSON, which no CRD schema can express) and then the checks of
the whole graph (:mod:`kwf.engine.graph`). It is pure and never raises.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from kwf.api import Job, Step, Workflow
from kwf.engine import graph

KINDS: dict[str, type[Job] | type[Workflow]] = {"Job": Job, "Workflow": Workflow}


@dataclasses.dataclass(frozen=True)
class Problem:
    field: str  # ``spec.steps[0].script.source``, camelCase as on the wire; "" for the document
    message: str

    def __str__(self) -> str:
        return f"{self.field or '(document)'}: {self.message}"


def problems(obj: Any) -> list[Problem]:
    """Every problem of one Job or Workflow (a parsed JSON or YAML document)."""
    parsed, found = parse(obj)
    if parsed is None:
        return found
    steps = parsed.spec.steps
    if not steps:
        return []  # a Job with workflowRef: its graph is the Workflow's
    return [_locate(message, steps) for message in graph.problems(tuple(steps))]


def parse(obj: Any) -> tuple[Job | Workflow | None, list[Problem]]:
    """The model of ``obj``, or None and why not."""
    if not isinstance(obj, Mapping):
        return None, [Problem("", f"a Job or Workflow is a JSON object, not {type(obj).__name__}")]
    kind = obj.get("kind")
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        return None, [Problem("kind", f"expected one of {', '.join(KINDS)}, got {kind!r}")]
    try:
        return model.model_validate(obj), []
    except pydantic.ValidationError as error:
        return None, [Problem(field_path(e["loc"]), e["msg"]) for e in error.errors()]


def field_path(loc: Sequence[str | int]) -> str:
    """``spec.steps[0].name`` from pydantic's ``('spec', 'steps', 0, 'name')``."""
    path = ""
    for part in loc:
        if isinstance(part, bool):  # a YAML 1.1 boolean used as a key
            path += f".{str(part).lower()}" if path else str(part).lower()
        elif isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":
            path += " (key)"
        else:
            path += f".{part}" if path else str(part)
    return path


_STEP_MESSAGE = re.compile(r"^step (?P<name>[a-z0-9-]+): (?P<rest>.*)$", re.DOTALL)
_FIELD_FIRST = re.compile(r"^(?P<field>[A-Za-z][A-Za-z0-9_.\[\]]*): (?P<rest>.*)$", re.DOTALL)
_DUPLICATE = re.compile(r"^duplicate step name '(?P<name>[^']+)'")


def _locate(message: str, steps: Sequence[Step]) -> Problem:
    """A graph problem at the step, and at its field when the message names one."""
    if match := _DUPLICATE.match(message):
        indices = [i for i, step in enumerate(steps) if step.name == match["name"]]
        return Problem(f"spec.steps[{indices[-1]}].name", message)
    match = _STEP_MESSAGE.match(message)
    if match is None:
        return Problem("spec.steps", message)  # about several steps at once: a cycle
    index = next((i for i, step in enumerate(steps) if step.name == match["name"]), None)
    if index is None:
        return Problem("spec.steps", message)
    path, rest = f"spec.steps[{index}]", match["rest"]
    for field in ("dependsOn", "onFailure"):
        if rest.startswith(field + " "):
            return Problem(f"{path}.{field}", rest)
    if field_match := _FIELD_FIRST.match(rest):
        return Problem(f"{path}.{field_match['field']}", field_match["rest"])
    return Problem(path, rest)
