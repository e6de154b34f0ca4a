"""Settling what steps returned: shared-state merges, saveAs, outputs, usage, new steps.

Successes are settled in completion order, each in the same new status as
its Succeeded mark; a step already Succeeded in the status is never settled
again, so a merge patch lands exactly once even across restarts.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from kwf.api import Step, TokenUsage
from kwf.engine import graph
from kwf.engine.state import format_size, json_size, merge_patch, set_path, size_problem
from kwf.engine.templates import TRUNCATED, as_text
from kwf.engine.types import Limits, Usage

JSON = Any


class SettleError(ValueError):
    """A result that cannot be taken in; the step fails with this message."""


def preview(output: JSON, limit: int) -> str | None:
    """A one-line preview of an output for ``status.steps[].output``."""
    if output is None:
        return None
    text = " ".join(as_text(output).split())
    limit = min(limit, 256)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bounded_output(output: JSON, limits: Limits) -> tuple[JSON, str | None]:
    """The output as kept in ``status.outputs``, and a note when only a preview fits."""
    size = json_size(output)
    if size <= limits.output_bytes:
        return output, None
    note = f"output of {format_size(size)} kept as a preview (limit {format_size(limits.output_bytes)})"
    text = as_text(output)[: limits.output_preview]
    return {TRUNCATED: note, "preview": text}, note


def new_state(
    state: Mapping[str, JSON],
    patch: Mapping[str, JSON] | None,
    save_as: Sequence[tuple[str, JSON]],
    limits: Limits,
) -> dict[str, JSON]:
    """``state`` with a step's merge patch and saveAs outputs; raises SettleError over the limit."""
    result = merge_patch(state, patch) if patch is not None else state
    if not isinstance(result, dict):
        raise SettleError("the state patch must be a JSON object")
    for path, value in save_as:
        result = set_path(result, path, value)
    if result is not state:
        problem = size_problem("shared state", json_size(result), limits.state_bytes)
        if problem:
            raise SettleError(problem)
    return result


@functools.lru_cache(maxsize=8192)
def _parse_step(text: str) -> Step:
    return Step.model_validate_json(text)


def parse_steps(data: Sequence[Mapping[str, JSON]]) -> list[Step]:
    """Steps kept as JSON (``status.addedSteps``), the same objects for the same text."""
    return [_parse_step(json.dumps(item, sort_keys=True)) for item in data]


def returned_steps(name: str, data: Sequence[Mapping[str, JSON]], graph_steps: Sequence[Step]) -> list[Step]:
    """Validate the steps a step returned against the run's graph; raises SettleError."""
    steps: list[Step] = []
    for index, item in enumerate(data):
        try:
            steps.append(_parse_step(json.dumps(item, sort_keys=True)))
        except (ValidationError, TypeError) as error:
            raise SettleError(f"returned step {index} is not valid: {_first_error(error)}") from None
    taken = {step.name for step in graph_steps}
    for step in steps:
        if step.name in taken:
            raise SettleError(f"returned step {step.name!r} clashes with a step of the same name")
        taken.add(step.name)
    problems = graph.problems((*graph_steps, *steps))
    if problems:
        raise SettleError("returned steps do not fit the graph: " + "; ".join(problems[:3]))
    return steps


def _first_error(error: Exception) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "step"
        return f"{where}: {first['msg']}"
    return str(error)


def add_usage(total: dict[str, TokenUsage], usage: Mapping[str, Usage]) -> dict[str, TokenUsage]:
    """``total`` with one result's token usage added, by model."""
    if not usage:
        return total
    result = dict(total)
    for model, counts in usage.items():
        old = result.get(model) or TokenUsage()
        result[model] = TokenUsage(
            prompt_tokens=old.prompt_tokens + counts.prompt_tokens,
            completion_tokens=old.completion_tokens + counts.completion_tokens,
            total_tokens=old.total_tokens + counts.total_tokens,
        )
    return result
