"""The values that flow through plan(): what was observed, what to do, the limits.

Every executor (local processes, Kubernetes Jobs, inline in the operator)
reports what exists as :class:`Attempt` values and carries out :class:`Launch`
and :class:`Stop` actions; :func:`kwf.engine.plan` decides in between.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from kwf.api import JobStatus, Step
from kwf.engine.cel_cost import LIMIT as WHEN_COST
from kwf.engine.templates import RENDERED_STEP_BYTES

JSON = Any


class AttemptPhase(enum.StrEnum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"  # the step's own failure: spends its retry budget
    LOST = "Lost"  # the infrastructure's: pod deleted, evicted, node lost, Job rejected

    @property
    def finished(self) -> bool:
        return self is not AttemptPhase.RUNNING


@dataclasses.dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclasses.dataclass(frozen=True)
class Result:
    """What a step answered: ``{"output": ..., "state": <merge patch>, "steps": [...]}``."""

    output: JSON = None
    state: Mapping[str, JSON] | None = None
    steps: Sequence[Mapping[str, JSON]] | None = None
    usage: Mapping[str, Usage] = dataclasses.field(default_factory=dict)  # by model

    @classmethod
    def from_json(cls, data: Mapping[str, JSON]) -> Result:
        """Parse a step's result; raises ValueError naming the field that is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a step result must be a JSON object, not {type(data).__name__}")
        unknown = set(data) - {"output", "state", "steps", "usage"}
        if unknown:
            raise ValueError(f"unknown field(s) in step result: {', '.join(sorted(unknown))}")
        state = data.get("state")
        if state is not None and not isinstance(state, Mapping):
            raise ValueError("result.state must be a JSON object (a merge patch)")
        steps = data.get("steps")
        if steps is not None and not isinstance(steps, list):
            raise ValueError("result.steps must be a list of steps")
        given = data.get("usage") or {}
        if not isinstance(given, Mapping):
            raise ValueError("result.usage must be an object of token counts by model")
        usage = {}
        for model, counts in given.items():
            if not isinstance(counts, Mapping):
                raise ValueError(f"result.usage.{model}: must be an object of token counts")
            usage[str(model)] = Usage(
                prompt_tokens=_count(counts, "promptTokens", model),
                completion_tokens=_count(counts, "completionTokens", model),
                total_tokens=_count(counts, "totalTokens", model),
            )
        return cls(output=data.get("output"), state=state, steps=steps, usage=usage)

    def to_json(self) -> dict[str, JSON]:
        data: dict[str, JSON] = {"output": self.output}
        if self.state is not None:
            data["state"] = dict(self.state)
        if self.steps is not None:
            data["steps"] = list(self.steps)
        if self.usage:
            data["usage"] = {
                model: {
                    "promptTokens": u.prompt_tokens,
                    "completionTokens": u.completion_tokens,
                    "totalTokens": u.total_tokens,
                }
                for model, u in self.usage.items()
            }
        return data


def _count(counts: Mapping[str, JSON], key: str, model: str) -> int:
    value = counts.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise ValueError(f"result.usage.{model}.{key}: must be a whole number of tokens, not {value!r:.40}")
    return value


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One launch of a step, as observed. ``number`` counts launches from 1,
    infrastructure losses included, so every launch has its own child name."""

    step: str
    number: int
    phase: AttemptPhase
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: Result | None = None  # set when SUCCEEDED
    message: str | None = None  # why it FAILED or was LOST
    child: str | None = None  # the executor's name for it (the child Job's name)


#: step name -> its attempts, in any order
Observed = Mapping[str, Sequence[Attempt]]


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What a step gets besides its rendered spec."""

    job: str
    namespace: str | None
    params: Mapping[str, JSON]
    state: Mapping[str, JSON]


@dataclasses.dataclass(frozen=True)
class Launch:
    """Start attempt ``number`` of ``step`` (already rendered: no templates left)."""

    step: Step
    number: int
    inputs: Inputs
    timeout_seconds: float | None = None  # per attempt; None: no limit


@dataclasses.dataclass(frozen=True)
class Stop:
    """Stop a running attempt (cancel, timeout, deadline). Its record stays."""

    step: str
    number: int
    reason: str


Action = Launch | Stop


@dataclasses.dataclass(frozen=True)
class Limits:
    state_bytes: int = 256 * 1024
    result_message_bytes: int = 4 * 1024  # termination message
    result_bytes: int = 256 * 1024  # framed on stdout
    infra_retries: int = 5  # lost attempts retried without spending the retry budget
    output_preview: int = 120  # characters of status.steps[].output
    output_bytes: int = 32 * 1024  # status.outputs[step]; larger outputs are kept as a preview
    # The whole status of a run: with the spec beside it, under the 1.5 MiB etcd
    # keeps of one object. Shared state, outputs, added steps and step entries
    # share it; outputs past it are kept as previews, steps past it fail.
    status_bytes: int = 1024 * 1024
    max_added_steps: int = 200  # steps a run's steps may add, in all
    json_depth: int = 64  # nesting of a result's output and state patch
    when_cost: int = WHEN_COST  # see kwf.engine.cel_cost
    rendered_step_bytes: int = RENDERED_STEP_BYTES  # what a step's templates may write in all


@dataclasses.dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    status: JobStatus
    requeue_after: float | None = None  # seconds until plan() wants to look again


class Executor(Protocol):
    """Runs step attempts somewhere and tells what exists. Implemented by the
    local executor, the Kubernetes executor and the in-operator inline runner."""

    async def launch(self, action: Launch) -> None:
        """Start the attempt; launching one that exists already is not an error."""

    async def stop(self, action: Stop) -> None:
        """Stop the attempt; stopping one that finished or is gone is not an error."""

    def observe(self) -> Observed:
        """Every attempt that exists, as it is now."""
