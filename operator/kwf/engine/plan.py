"""plan(): from a run's spec, its last status and what exists, to what to do next.

Pure and level-based: the same arguments give the same plan, and a plan's
status fed back with the same observations launches nothing new. Every rule
of a run lives here or in the modules it calls: dependsOn order, fan-out,
parallelism, when, retries and backoff, infrastructure losses, timeouts, the
deadline, suspend, cancel, onFailure, shared state, graph edits and reruns.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from kwf.api import JobPhase, JobSpec, JobStatus, Step, StepPhase, StepStatus
from kwf.engine import cel, graph, templates
from kwf.engine.budget import StatusBudget
from kwf.engine.health import Reason, health_conditions, reason_for
from kwf.engine.progress import StepRecord, fold, short
from kwf.engine.results import (
    SettleError,
    add_usage,
    bounded_output,
    new_state,
    parse_steps,
    preview,
    returned_steps,
)
from kwf.engine.state import format_size, json_size
from kwf.engine.types import Action, Attempt, Inputs, Launch, Limits, Observed, Plan, Stop

JSON = Any
RUN_MESSAGE_LIMIT = 512


def plan(
    spec: JobSpec,
    status: JobStatus,
    observed: Observed,
    now: datetime,
    limits: Limits = Limits(),  # noqa: B008  (frozen)
    generation: int | None = None,
    *,
    job: str = "",
    namespace: str | None = None,
) -> Plan:
    """The actions to take and the new status of one run.

    ``spec`` has inline steps (see :func:`kwf.engine.workflow.effective_spec`
    for workflowRef runs); ``observed`` holds every attempt that exists;
    ``job`` and ``namespace`` go into each Launch's inputs.
    """
    return _Pass(spec, status, observed, now, limits, generation, job, namespace).run()


class _Pass:
    def __init__(
        self,
        spec: JobSpec,
        status: JobStatus,
        observed: Observed,
        now: datetime,
        limits: Limits,
        generation: int | None,
        job: str,
        namespace: str | None,
    ) -> None:
        self.spec, self.status, self.observed, self.now = spec, status, observed, now
        self.limits, self.generation, self.job, self.namespace = limits, generation, job, namespace
        self.steps: list[Step] = [*(spec.steps or ()), *parse_steps(status.added_steps)]
        self.by_name = {step.name: step for step in self.steps}
        self.problems = graph.problems(tuple(self.steps))
        self.handler_of = {s.on_failure: s.name for s in self.steps if s.on_failure in self.by_name}
        self.records: dict[str, StepRecord] = {}
        self.budget = StatusBudget(
            limits, max(len(self.steps), len(status.steps)) + limits.max_added_steps - len(status.added_steps)
        )
        self.message_bytes = self.budget.message_bytes
        self.preview_bytes = self.budget.preview_bytes
        old = {entry.name: entry for entry in status.steps}
        for step in self.steps:
            if step.name not in self.records:
                self.records[step.name] = StepRecord(
                    old.get(step.name) or StepStatus(name=step.name), step, self.message_bytes
                )
        for entry in status.steps:  # removed from the spec: kept if it ever started
            if entry.name not in self.records and (entry.last_attempt or observed.get(entry.name)):
                self.records[entry.name] = StepRecord(entry, None, self.message_bytes)
        self.state: dict[str, JSON] = dict(
            status.shared_state if status.shared_state is not None else spec.initial_state
        )
        self.outputs = dict(status.outputs)
        self.usage = dict(status.usage)
        self.added = list(status.added_steps)
        self.actions: list[Action] = []
        self.phase = status.phase
        self.started_at = status.started_at
        self.finished_at = status.finished_at
        self.rerun = status.rerun
        self.reason: Reason | None = None
        self.message: str | None = None
        self.failing = False
        self._view: dict[str, dict[str, JSON]] | None = None

    # ---------------------------------------------------------------- the pass

    def run(self) -> Plan:
        request = self.spec.rerun
        if request is not None and request.id != self.rerun:
            self._rerun(request.step, request.id)
        if self.phase.finished:
            return self._finished()
        if self.started_at is None:
            self.started_at = self.now
        for record in self.records.values():
            stop = fold(record, self.observed.get(record.name, ()), self.now, self.limits)
            if stop is not None:
                self.actions.append(stop)
        self._settle()
        deadline = self._deadline()
        if self.spec.cancel:
            self._cancel()
        elif deadline is not None and self.now >= deadline:
            self._deadline_passed()
        elif not self.problems:
            self._schedule()
        self._verdict()
        return self._result(deadline)

    def _finished(self) -> Plan:
        self.reason = Reason.DEADLINE_EXCEEDED if self._deadline_reason() else reason_for(self.phase)
        self.message = self.status.message
        return self._result(None)

    def _deadline_reason(self) -> bool:
        return any(c.type == "Ready" and c.reason == Reason.DEADLINE_EXCEEDED for c in self.status.conditions)

    # ------------------------------------------------------------- successes

    def _settle(self) -> None:
        done = [
            (r.success.finished_at or self.now, r.name, r, r.success)
            for r in self.records.values()
            if r.success
        ]
        done.sort(key=lambda item: (item[0], item[1]))
        for _, _, record, attempt in done:
            self._settle_one(record, attempt)

    def _settle_one(self, record: StepRecord, attempt: Attempt) -> None:
        result = attempt.result
        output = result.output if result is not None else None
        step, at = record.spec, attempt.finished_at or self.now
        saves: list[tuple[str, JSON]] = []
        if step is not None and step.save_as:
            saves.append((step.save_as, output))
        primary = self.records.get(self.handler_of.get(record.name, ""))
        recovering = primary is not None and primary.phase is StepPhase.FAILED
        if recovering and primary is not None and primary.spec is not None and primary.spec.save_as:
            saves.append((primary.spec.save_as, output))
        try:
            added, added_bytes = (
                returned_steps(
                    record.name, result.steps, self.steps, self.limits.max_added_steps - len(self.added)
                )
                if result is not None and result.steps
                else ([], 0)
            )
            state = new_state(self.state, result.state if result is not None else None, saves, self.limits)
            growth = added_bytes + len(added) * self.budget.entry_bytes
            room = self.budget.room(self._unbounded_size, len(self.records))
            if growth and growth > room:
                raise SettleError(
                    f"the result would take the run's status over its budget of "
                    f"{format_size(self.limits.status_bytes)} (its returned steps take "
                    f"{format_size(growth)}, {format_size(max(room, 0))} is left)"
                )
        except SettleError as error:
            record.finish(StepPhase.FAILED, at, str(error))
            return
        self.state = state
        self.budget.take(growth)
        previous = json_size(self.outputs[record.name]) if record.name in self.outputs else 0
        kept, size, note = bounded_output(output, self.limits, room - growth + previous)
        self.outputs[record.name] = kept
        self.budget.take(size - previous)
        if result is not None:
            self.usage = add_usage(self.usage, result.usage)
        for new in added:
            self.steps.append(new)
            self.by_name[new.name] = new
            self.records[new.name] = StepRecord(StepStatus(name=new.name), new, self.message_bytes)
            self.added.append(new.dump())
            if new.on_failure in self.by_name:
                self.handler_of[new.on_failure] = new.name
        if added:
            self.problems = graph.problems(tuple(self.steps))
        record.finish(StepPhase.SUCCEEDED, at, note)
        record.set(output=preview(output, self.preview_bytes))
        if recovering and primary is not None:
            before = json_size(self.outputs[primary.name]) if primary.name in self.outputs else 0
            if size - before <= self.budget.room(self._unbounded_size, len(self.records)):
                self.outputs[primary.name] = kept
                self.budget.take(size - before)
            else:
                self.outputs.pop(primary.name, None)
            primary.set(phase=StepPhase.RECOVERED, message=f"failed, recovered by {record.name}")
            primary.set(output=preview(output, self.preview_bytes))

    def _unbounded_size(self) -> int:
        workflow = self.status.workflow
        snapshot = json_size(workflow.dump()) if workflow is not None else 0
        return json_size(self.outputs) + json_size(self.added) + snapshot

    # --------------------------------------------------------------- controls

    def _deadline(self) -> datetime | None:
        seconds = self.spec.active_deadline_seconds
        if seconds is None or self.started_at is None:
            return None
        return self.started_at + timedelta(seconds=seconds)

    def _stop_all(self, phase: StepPhase, running: str, pending: str) -> None:
        for record in self.records.values():
            if record.phase is StepPhase.RUNNING:
                record.stop_reason = running
                record.finish(phase, self.now, running)
            elif not record.finished:
                record.finish(StepPhase.CANCELLED, self.now, pending)

    def _cancel(self) -> None:
        self._stop_all(StepPhase.CANCELLED, "cancelled", "cancelled")
        self.phase, self.reason, self.message = JobPhase.CANCELLED, Reason.CANCELLED, "cancelled"

    def _deadline_passed(self) -> None:
        why = f"the run passed its deadline of {self.spec.active_deadline_seconds}s"
        self._stop_all(StepPhase.FAILED, f"stopped: {why}", f"not run: {why}")
        self.phase, self.reason, self.message = JobPhase.FAILED, Reason.DEADLINE_EXCEEDED, why

    # ------------------------------------------------------------- scheduling

    def _unhandled(self, record: StepRecord) -> bool:
        """Whether ``record`` failed for good with nothing left to stand in for it."""
        if record.phase is not StepPhase.FAILED or record.spec is None:
            return False
        handler = self.records.get(record.spec.on_failure or "")
        return handler is None or handler.finished

    def _schedule(self) -> None:
        self.failing = any(self._unhandled(r) for r in self.records.values())
        room = (self.spec.parallelism or len(self.records) + 1) - sum(
            1 for r in self.records.values() if r.phase is StepPhase.RUNNING
        )
        for name in graph.topological_order(tuple(self.steps)):
            record = self.records[name]
            if record.finished or record.phase is StepPhase.RUNNING:
                continue
            if not self._ready(record):
                continue
            if self.failing:
                self._mark(record, StepPhase.CANCELLED, f"not run: {self._first_failure()} failed")
                continue
            if record.phase is StepPhase.WAITING:
                retry_at = record.get("next_attempt_at")
                if retry_at is not None and retry_at > self.now:
                    record.wake_at(retry_at)
                    continue
            if self.spec.suspend:
                continue
            if record.phase is StepPhase.PENDING and not self._when(record):
                continue
            if room <= 0:
                continue
            if self._launch(record):
                room -= 1

    def _ready(self, record: StepRecord) -> bool:
        """Whether everything ``record`` waits for is done; marks it when it never will be."""
        step = record.spec
        assert step is not None
        primary = self.records.get(self.handler_of.get(record.name, ""))
        if primary is not None:
            if not primary.finished:
                return False
            if primary.phase is not StepPhase.FAILED:
                self._mark(record, StepPhase.SKIPPED, "not needed")
                return False
        for name in step.depends_on:
            dependency = self.records[name]
            phase = dependency.phase
            if phase.satisfies_dependents:
                continue
            if phase.finished and (phase is StepPhase.CANCELLED or self._unhandled(dependency)):
                self._mark(record, StepPhase.CANCELLED, f"not run: step {name} {phase.lower()}")
                return False
            return False
        return True

    def _when(self, record: StepRecord) -> bool:
        step = record.spec
        assert step is not None
        if step.when is None:
            return True
        try:
            if cel.evaluate(step.name, step.when, self._variable, self.limits.when_cost):
                return True
        except cel.WhenError as error:
            self._fail(record, str(error))
            return False
        self._mark(record, StepPhase.SKIPPED, f"when is false: {step.when}")
        return False

    def _launch(self, record: StepRecord) -> bool:
        step = record.spec
        assert step is not None
        try:
            rendered = templates.render_step(step, _Data(self), self.limits.rendered_step_bytes)
        except templates.TemplateError as error:
            self._fail(record, str(error))
            return False
        number = record.last_attempt + 1
        record.set(
            phase=StepPhase.RUNNING,
            attempts=record.attempts + 1,
            last_attempt=number,
            started_at=record.get("started_at") or self.now,
            finished_at=None,
            next_attempt_at=None,
            job=None,
        )
        if record.get("message") and record.old.phase is not StepPhase.WAITING:
            record.set(message=None)
        self._touch(record)
        inputs = Inputs(job=self.job, namespace=self.namespace, params=self.spec.params, state=self.state)
        timeout = float(step.timeout_seconds) if step.timeout_seconds is not None else None
        self.actions.append(Launch(step=rendered, number=number, inputs=inputs, timeout_seconds=timeout))
        return True

    def _fail(self, record: StepRecord, message: str) -> None:
        self._mark(record, StepPhase.FAILED, message)
        if self._unhandled(record):
            self.failing = True

    def _mark(self, record: StepRecord, phase: StepPhase, message: str) -> None:
        record.finish(phase, self.now, message)
        self._touch(record)
        primary = self.records.get(self.handler_of.get(record.name, ""))
        if phase is not StepPhase.SUCCEEDED and primary is not None and primary.phase is StepPhase.FAILED:
            self.failing = True  # the handler will not stand in

    def _touch(self, record: StepRecord) -> None:
        if self._view is not None and record.name in self._view:
            self._view[record.name] = {"phase": str(record.phase), "output": self.outputs.get(record.name)}

    def _first_failure(self) -> str:
        for record in self.records.values():
            if self._unhandled(record):
                return f"step {record.name}"
        return "a step"

    # ---------------------------------------------------- data for when and templates

    def _variable(self, name: str) -> JSON:
        if name == "params":
            return self.spec.params
        if name == "state":
            return self.state
        if self._view is None:
            self._view = {
                r.name: {"phase": str(r.phase), "output": self.outputs.get(r.name)}
                for r in self.records.values()
            }
        return self._view

    # ---------------------------------------------------------------- verdict

    def _verdict(self) -> None:
        if self.phase.finished:
            self.finished_at = self.now
            return
        graph_records = [self.records[s.name] for s in self.steps if s.name in self.records]
        running = any(r.phase is StepPhase.RUNNING for r in self.records.values())
        if self.problems:
            self.phase = JobPhase.RUNNING
            self.reason, self.message = Reason.INVALID_SPEC, "; ".join(self.problems)
            return
        if not running and all(r.finished for r in graph_records):
            failed = next((r for r in graph_records if r.phase is StepPhase.FAILED), None)
            if failed is None:
                failed = next((r for r in graph_records if r.phase is StepPhase.CANCELLED), None)
            if failed is None:
                self.phase, self.reason, self.message = JobPhase.SUCCEEDED, Reason.SUCCEEDED, None
            else:
                self.phase, self.reason = JobPhase.FAILED, Reason.FAILED
                self.message = f"step {failed.name} {failed.phase.lower()}: {failed.get('message') or ''}"
            self.finished_at = self.now
            return
        started = running or any(r.last_attempt or r.finished for r in self.records.values())
        self.phase = JobPhase.RUNNING if started or not self.spec.suspend else JobPhase.PENDING
        self.reason = reason_for(self.phase, suspended=self.spec.suspend)
        if self.spec.suspend:
            self.message = "suspended: no new steps start"
        elif self.failing:
            self.message = f"{self._first_failure()} failed; waiting for running steps"
        else:
            self.message = None

    def _rerun(self, step: str | None, request: str) -> None:
        self.rerun = request
        if step is not None and step not in self.by_name:
            self.message = f"rerun: no step named {step!r}"
            return
        if step is not None:
            targets = [step]
        else:
            targets = [
                r.name for r in self.records.values() if r.phase in (StepPhase.FAILED, StepPhase.CANCELLED)
            ]
        reset = graph.downstream(self.steps, targets)
        for name in reset:
            record = self.records[name]
            if record.phase is StepPhase.RUNNING:
                continue
            record.set(
                phase=StepPhase.PENDING,
                attempts=0,
                infra_retries=0,
                started_at=None,
                finished_at=None,
                next_attempt_at=None,
                message=None,
                job=None,
                output=None,
            )
            self.outputs.pop(name, None)
        if reset:
            # a rerun is a fresh start, for the deadline too
            self.phase, self.started_at, self.finished_at = JobPhase.RUNNING, None, None

    # ----------------------------------------------------------------- result

    def _result(self, deadline: datetime | None) -> Plan:
        self._stop_stragglers()
        entries = self._entries()
        finished = sum(1 for entry in entries if entry.phase.finished)
        reason = self.reason or reason_for(self.phase, suspended=self.spec.suspend)
        message = short(self.message, RUN_MESSAGE_LIMIT) if self.message else None
        status = self.status.model_copy(
            update={
                "phase": self.phase,
                "progress": f"{finished}/{len(entries)}",
                "message": message,
                "started_at": self.started_at,
                "finished_at": self.finished_at if self.phase.finished else None,
                "observed_generation": self.generation,
                "conditions": health_conditions(
                    self.status.conditions, reason, message or str(reason), self.now, self.generation
                ),
                "steps": entries,
                "shared_state": self.state,
                "outputs": self.outputs,
                "usage": self.usage,
                "added_steps": self.added,
                "rerun": self.rerun,
            }
        )
        return Plan(actions=tuple(self.actions), status=status, requeue_after=self._requeue(deadline))

    def _entries(self) -> list[StepStatus]:
        if self.phase.finished and not self.records:
            return list(self.status.steps)
        return [record.build() for record in self.records.values()]

    def _stop_stragglers(self) -> None:
        """Stop every running attempt that is not the current one of a running step."""
        stopping = {(a.step, a.number) for a in self.actions if isinstance(a, Stop)}
        for name, attempts in self.observed.items():
            record = self.records.get(name)
            for attempt in attempts:
                if attempt.phase.finished or (name, attempt.number) in stopping:
                    continue
                if record is not None and (
                    record.phase is StepPhase.RUNNING and attempt.number == record.last_attempt
                ):
                    continue
                reason = (record.stop_reason if record else None) or "the attempt is no longer wanted"
                self.actions.append(Stop(step=name, number=attempt.number, reason=reason))

    def _requeue(self, deadline: datetime | None) -> float | None:
        if self.phase.finished:
            return None
        wakes = [r.wake for r in self.records.values() if r.wake is not None]
        if deadline is not None:
            wakes.append(deadline)
        if not wakes:
            return None
        return max((min(wakes) - self.now).total_seconds(), 0.0)


class _Data(Mapping[str, JSON]):
    """params, state and steps for templates, built only when read."""

    def __init__(self, run: _Pass) -> None:
        self._run = run

    def __getitem__(self, key: str) -> JSON:
        if key not in ("params", "state", "steps"):
            raise KeyError(key)
        return self._run._variable(key)

    def __iter__(self) -> Any:
        return iter(("params", "state", "steps"))

    def __len__(self) -> int:
        return 3
