"""Small builders for plan() tests: specs from short step lists, and a run driven pass by pass."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from kwf.api import JobSpec, JobStatus, StepStatus
from kwf.engine.plan import plan
from kwf.engine.types import Attempt, AttemptPhase, Launch, Limits, Plan, Result, Stop

T0 = datetime(2030, 1, 1, tzinfo=UTC)
LIMITS = Limits()


def step(name: str, *after: str, **fields: Any) -> dict[str, Any]:
    """A script step in wire form; ``fields`` are camelCase spec fields."""
    return {"name": name, "dependsOn": list(after), "script": {"source": "pass"}, **fields}


def job(*steps: dict[str, Any], **fields: Any) -> JobSpec:
    return JobSpec.model_validate({"steps": list(steps), **fields})


class Run:
    """A run driven by hand: each pass is plan(); launches become running attempts."""

    def __init__(self, spec: JobSpec, limits: Limits = LIMITS, now: datetime = T0) -> None:
        self.spec = spec
        self.limits = limits
        self.now = now
        self.status = JobStatus()
        self.attempts: dict[str, list[Attempt]] = {}
        self.last: Plan | None = None
        self.launched: list[tuple[str, int]] = []

    def plan(self, carry_out: bool = True) -> Plan:
        result = plan(self.spec, self.status, self.attempts, self.now, self.limits, generation=1)
        self.last = result
        if carry_out:
            self.status = result.status
            for action in result.actions:
                if isinstance(action, Launch):
                    self.launched.append((action.step.name, action.number))
                    self.attempts.setdefault(action.step.name, []).append(
                        Attempt(action.step.name, action.number, AttemptPhase.RUNNING, started_at=self.now)
                    )
                elif isinstance(action, Stop):
                    self._end(action.step, action.number, AttemptPhase.FAILED, message="stopped")
        return result

    def _end(self, name: str, number: int, phase: AttemptPhase, **fields: Any) -> None:
        attempts = self.attempts[name]
        for index, attempt in enumerate(attempts):
            if attempt.number == number and not attempt.phase.finished:
                attempts[index] = dataclasses.replace(attempt, phase=phase, finished_at=self.now, **fields)

    def finish(
        self,
        name: str,
        phase: AttemptPhase = AttemptPhase.SUCCEEDED,
        output: Any = None,
        state: dict[str, Any] | None = None,
        message: str | None = None,
        **result: Any,
    ) -> None:
        """End the running attempt of ``name``."""
        (attempt,) = [a for a in self.attempts[name] if not a.phase.finished]
        done = Result(output=output, state=state, **result) if phase is AttemptPhase.SUCCEEDED else None
        self._end(name, attempt.number, phase, result=done, message=message)

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def step(self, name: str) -> StepStatus:
        (entry,) = [s for s in self.status.steps if s.name == name]
        return entry

    def phases(self) -> dict[str, str]:
        return {s.name: str(s.phase) for s in self.status.steps}

    def running(self) -> list[str]:
        return sorted(
            n for n, attempts in self.attempts.items() if any(not a.phase.finished for a in attempts)
        )

    def launches(self, result: Plan | None = None) -> list[str]:
        result = result or self.last
        assert result is not None
        return [a.step.name for a in result.actions if isinstance(a, Launch)]

    def stops(self, result: Plan | None = None) -> list[Stop]:
        result = result or self.last
        assert result is not None
        return [a for a in result.actions if isinstance(a, Stop)]

    def condition(self, kind: str) -> tuple[str, str]:
        (found,) = [c for c in self.status.conditions if c.type == kind]
        return found.status, found.reason
