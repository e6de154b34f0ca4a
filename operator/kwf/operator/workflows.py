"""What a run plans from: its own steps, or its Workflow's as the run first saw them.

A run that names a Workflow keeps a snapshot of it in its status when it
starts, so later edits of the Workflow change only new runs. The Workflows
themselves come from the operator's watch, readable or not: one that cannot
be read stalls the runs that need it, naming why, and no other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pydantic

from kwf.api import Job, JobSpec, JobStatus, Step, Workflow, WorkflowSnapshot, WorkflowSpec
from kwf.engine.health import Reason
from kwf.engine.workflow import effective_spec
from kwf.operator.status import describe

JSON = Any
WorkflowKey = tuple[str, str]  # namespace, name


@dataclasses.dataclass(frozen=True)
class Blocked:
    """Why a run cannot be planned yet: the reason of its Stalled condition."""

    reason: Reason
    message: str
    workflow: str | None = None  # the Workflow at fault, when it is one


def snapshot_of(workflow: Workflow) -> WorkflowSnapshot:
    """What a run keeps of its Workflow when it starts: all that its plan reads."""
    spec = workflow.spec
    return WorkflowSnapshot(
        name=workflow.metadata.name,
        generation=workflow.metadata.generation,
        steps=[step.dump() for step in spec.steps],
        params=dict(spec.params),
        initial_state=dict(spec.initial_state),
        parallelism=spec.parallelism,
        active_deadline_seconds=spec.active_deadline_seconds,
        ttl_seconds_after_finished=spec.ttl_seconds_after_finished,
    )


def snapshot_steps(snapshot: WorkflowSnapshot) -> list[Step]:
    return list(JobSpec.model_validate({"steps": list(snapshot.steps)}).steps or ())


def frozen_spec(snapshot: WorkflowSnapshot, current: Workflow | None) -> WorkflowSpec:
    """The Workflow's settings as the run first saw them. A snapshot written
    before it held params and the rest (no ``params`` key at all) takes them
    from the Workflow as it is now, as runs did then."""
    if "params" not in snapshot.model_fields_set and current is not None:
        return current.spec
    return WorkflowSpec.model_validate(
        {
            "steps": list(snapshot.steps),
            "params": dict(snapshot.params),
            "initialState": dict(snapshot.initial_state),
            "parallelism": snapshot.parallelism,
            "activeDeadlineSeconds": snapshot.active_deadline_seconds,
            "ttlSecondsAfterFinished": snapshot.ttl_seconds_after_finished,
        }
    )


def effective(
    job: Job,
    status: JobStatus,
    workflows: Mapping[WorkflowKey, dict[str, JSON]],
    unreadable: Mapping[WorkflowKey, str],
) -> tuple[JobSpec, WorkflowSnapshot | None] | Blocked:
    """The spec to plan from and the snapshot to keep, or why there is none.
    Pure but for the cost of validating a Workflow: large ones are called off the loop."""
    spec = job.spec
    ref = spec.workflow_ref
    if ref is None:
        return spec, None
    namespace = job.metadata.namespace or ""
    key = (namespace, ref.name)
    current = workflows.get(key)
    workflow: Workflow | None = None
    snapshot = status.workflow
    started = snapshot is not None and snapshot.name == ref.name
    if not started and key in unreadable:
        message = f"spec.workflowRef.name: Workflow {ref.name!r} cannot be read: {unreadable[key]}"
        return Blocked(Reason.INVALID_WORKFLOW, message, ref.name)
    if current is not None:
        try:
            workflow = Workflow.model_validate(current)
        except pydantic.ValidationError as error:
            if not started:
                message = f"Workflow {ref.name!r} is not valid: {describe(error)}"
                return Blocked(Reason.INVALID_WORKFLOW, message, ref.name)
    if snapshot is None or not started:
        if workflow is None:
            message = f"spec.workflowRef.name: Workflow {ref.name!r} not found in namespace {namespace}"
            return Blocked(Reason.WORKFLOW_NOT_FOUND, message)
        snapshot = snapshot_of(workflow)
    try:
        return effective_spec(spec, frozen_spec(snapshot, workflow), snapshot_steps(snapshot)), snapshot
    except pydantic.ValidationError as error:
        return Blocked(Reason.INVALID_WORKFLOW, f"Workflow {ref.name!r} is not valid: {describe(error)}")
