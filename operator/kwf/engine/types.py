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
        usage = {}
        for model, counts in (data.get("usage") or {}).items():
            usage[model] = Usage(
                prompt_tokens=int(counts.get("promptTokens", 0)),
                completion_tokens=int(counts.get("completionTokens", 0)),
                total_tokens=int(counts.get("totalTokens", 0)),
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
    status_bytes: int = 1024 * 1024


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
