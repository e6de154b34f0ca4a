"""Keeping the event loop free while large runs are read and planned.

The loop that plans runs also answers ``/healthz``, every watch and every
other run. Reading and planning a run costs time in proportion to its steps
(a 1,000-step run: about 15 ms to validate, a few ms to plan and diff), so a
large run does that work in a worker thread while the loop goes on; a small
one does it inline, where it costs less than the hand-over to a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

import pydantic

from kwf.api import Job, Step

JSON = Any
P = ParamSpec("P")
T = TypeVar("T")

#: From this many steps on, a run is read and planned off the event loop.
HEAVY_STEPS = 200


def _count(value: JSON) -> int:
    return len(value) if isinstance(value, list) else 0


def size_of(body: Mapping[str, JSON], workflow: Mapping[str, JSON] | None = None) -> int:
    """How many steps reading and planning a run goes through: its own, those
    its status records, its Workflow's (as snapshot, or as it is now)."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    snapshot = status.get("workflow") or {}
    return max(
        _count(spec.get("steps")),
        _count(status.get("steps")),
        _count(snapshot.get("steps")) + _count(status.get("addedSteps")),
        _count(((workflow or {}).get("spec") or {}).get("steps")),
    )


async def run_sized(size: int, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``work(*args)``: in a worker thread when ``size`` is at least HEAVY_STEPS."""
    if size >= HEAVY_STEPS:
        return await asyncio.to_thread(work, *args, **kwargs)
    return work(*args, **kwargs)


def read_run(body: Mapping[str, JSON]) -> Job:
    """The run's spec, read a step at a time: one validation of a whole large
    spec is one long native call that holds the interpreter, a step's is short,
    so the loop gets its turns in between. A problem is reported as the whole
    read reports it, with its path from the top."""
    fields = {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body}
    spec = fields.get("spec")
    if not isinstance(spec, Mapping):
        return Job.model_validate(fields)
    steps = spec.get("steps")
    if not isinstance(steps, list) or len(steps) < HEAVY_STEPS:
        return Job.model_validate(fields)
    try:
        read = [Step.model_validate(step) for step in steps]
        return Job.model_validate({**fields, "spec": {**spec, "steps": read}})
    except pydantic.ValidationError:
        return Job.model_validate(fields)  # the same problem, named from the top
