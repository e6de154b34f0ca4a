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
from kwf.engine.progress import short
from kwf.engine.state import format_size, json_size, merge_patch, set_path, size_problem
from kwf.engine.templates import TRUNCATED, as_text
from kwf.engine.types import Limits, Usage

JSON = Any


class SettleError(ValueError):
    """A result that cannot be taken in; the step fails with this message."""


#: Models counted apart in ``status.usage``; the rest are summed under OTHER_MODELS.
MAX_MODELS = 16
OTHER_MODELS = "(other models)"
MODEL_CHARS = 128


def preview(output: JSON, limit: int) -> str | None:
    """A one-line preview of an output for ``status.steps[].output``, at most ``limit`` bytes."""
    if output is None:
        return None
    limit = min(limit, 256)
    try:
        text = as_text(output)
    except (RecursionError, TypeError, ValueError):
        return "(nested too deep to show)"
    # a preview needs the first characters only: never split a large output whole
    text = " ".join(text[: limit * 2].split())
    return short(text, limit)


def depth_over(value: JSON, limit: int) -> bool:
    """Whether ``value`` nests deeper than ``limit`` objects and lists."""
    level: list[JSON] = [value]
    for _ in range(limit + 1):
        level = [
            item
            for container in level
            if isinstance(container, Mapping | list)
            for item in (container.values() if isinstance(container, Mapping) else container)
            if isinstance(item, Mapping | list)
        ]
        if not level:
            return False
    return True


def bounded_output(output: JSON, limits: Limits, room: int | None = None) -> tuple[JSON, int, str | None]:
    """The output as kept in ``status.outputs``, its size, and a note when only a preview fits.

    ``room``: what the run's status can still take; the output is kept only
    within both it and ``limits.output_bytes``.
    """
    if depth_over(output, limits.json_depth):
        note = f"output nested deeper than {limits.json_depth} levels: kept as a preview"
        kept = {TRUNCATED: note, "preview": preview(output, limits.output_preview) or ""}
        return kept, json_size(kept), note
    size = json_size(output)
    fits = size <= limits.output_bytes
    if fits and (room is None or size <= room):
        return output, size, None
    if fits:
        note = (
            f"output of {format_size(size)} kept as a preview: the run's status is near its "
            f"budget of {format_size(limits.status_bytes)}"
        )
    else:
        note = f"output of {format_size(size)} kept as a preview (limit {format_size(limits.output_bytes)})"
    kept = {TRUNCATED: note, "preview": preview(output, limits.output_preview) or ""}
    kept_size = json_size(kept)
    if room is not None and kept_size > room:
        # not even a preview: the note alone, within what each step entry is allowed
        note = f"output of {format_size(size)} not kept: the run's status is at its budget"
        kept = {TRUNCATED: note}
        kept_size = json_size(kept)
    return kept, kept_size, note


def new_state(
    state: Mapping[str, JSON],
    patch: Mapping[str, JSON] | None,
    save_as: Sequence[tuple[str, JSON]],
    limits: Limits,
) -> dict[str, JSON]:
    """``state`` with a step's merge patch and saveAs outputs; raises SettleError over the limits."""
    if patch is not None and not isinstance(patch, Mapping):
        raise SettleError("result.state must be a JSON object (a merge patch)")
    for what, value in (("result.state", patch), *((f"output saved as {p}", v) for p, v in save_as)):
        if depth_over(value, limits.json_depth):
            raise SettleError(f"{what} is nested deeper than {limits.json_depth} levels")
    result = merge_patch(state, patch) if patch is not None else state
    if not isinstance(result, dict):
        raise SettleError("result.state must be a JSON object (a merge patch)")
    for path, value in save_as:
        result = set_path(result, path, value)
    if result is state:
        return result if isinstance(result, dict) else dict(result)
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


def returned_steps(
    name: str, data: Sequence[Mapping[str, JSON]], graph_steps: Sequence[Step], room: int
) -> tuple[list[Step], int]:
    """Validate the steps a step returned against the run's graph, ``room`` of them at most;
    returns them and the bytes they take in the status; raises SettleError."""
    if not isinstance(data, list | tuple):
        raise SettleError("result.steps must be a list of steps")
    if len(data) > room:
        raise SettleError(
            f"result.steps holds {len(data)} steps; the run may add {room} more "
            "(Limits.max_added_steps in all)"
        )
    steps: list[Step] = []
    size = 2
    for index, item in enumerate(data):
        try:
            text = json.dumps(item, sort_keys=True)
            steps.append(_parse_step(text))
        except (ValidationError, TypeError, ValueError, RecursionError) as error:
            raise SettleError(f"result.steps[{index}] is not valid: {_first_error(error)}") from None
        size += len(text.encode()) + 1
    taken = {step.name for step in graph_steps}
    for step in steps:
        if step.name in taken:
            raise SettleError(f"returned step {step.name!r} clashes with a step of the same name")
        taken.add(step.name)
    problems = graph.problems((*graph_steps, *steps))
    if problems:
        raise SettleError("returned steps do not fit the graph: " + "; ".join(problems[:3]))
    return steps, size


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
    for given, counts in usage.items():
        # model names come from results: bounded in length and in number
        model = given[:MODEL_CHARS]
        if model not in result and len(result) >= MAX_MODELS:
            model = OTHER_MODELS
        old = result.get(model) or TokenUsage()
        result[model] = TokenUsage(
            prompt_tokens=old.prompt_tokens + counts.prompt_tokens,
            completion_tokens=old.completion_tokens + counts.completion_tokens,
            total_tokens=old.total_tokens + counts.total_tokens,
        )
    return result
