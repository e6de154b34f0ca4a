"""The spec a workflowRef run plans with: the Workflow's steps and defaults under the Job's own values."""

from __future__ import annotations

from collections.abc import Sequence

from kwf.api import JobSpec, Step, WorkflowSpec


def effective_spec(job: JobSpec, workflow: WorkflowSpec, steps: Sequence[Step] | None = None) -> JobSpec:
    """The inline-steps spec that plan() runs for a Job with a ``workflowRef``.

    - steps: ``steps`` when given (the snapshot the run started from, so later
      edits of the Workflow change only new runs), else the Workflow's;
    - params and initialState: the Workflow's, overlaid key by key by the Job's;
    - parallelism, activeDeadlineSeconds, ttlSecondsAfterFinished: the Job's,
      else the Workflow's;
    - suspend, cancel and rerun: the Job's.

    A Job with inline steps is returned as it is.
    """
    if job.workflow_ref is None:
        return job
    return job.model_copy(
        update={
            "steps": list(steps if steps is not None else workflow.steps),
            "params": {**workflow.params, **job.params},
            "initial_state": {**workflow.initial_state, **job.initial_state},
            "parallelism": job.parallelism if job.parallelism is not None else workflow.parallelism,
            "active_deadline_seconds": (
                job.active_deadline_seconds
                if job.active_deadline_seconds is not None
                else workflow.active_deadline_seconds
            ),
            "ttl_seconds_after_finished": (
                job.ttl_seconds_after_finished
                if job.ttl_seconds_after_finished is not None
                else workflow.ttl_seconds_after_finished
            ),
        }
    )
