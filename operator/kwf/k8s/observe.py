"""What a step attempt's child Job and pod say, as an engine :class:`Attempt`.

Pure functions over the JSON the API server returns. The pod's container
termination decides (it is there a second or two before the Job's
``Complete`` condition); the Job's conditions cover what the pod cannot tell:
a step timeout (``DeadlineExceeded``) or a pod that vanished.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kwf.engine.types import Attempt, AttemptPhase, Result
from kwf.k8s.manifests import CONTAINER, LABEL_ATTEMPT, LABEL_JOB_UID, LABEL_STEP
from kwf.steps.results import Failure, Framed, read_framed, read_report

JSON = Any

#: Pod reasons that mean the infrastructure, not the step, ended it.
INFRA_REASONS = frozenset({"Evicted", "NodeLost", "Shutdown", "Terminated", "NodeShutdown", "Preempting"})
MESSAGE_CAP = 1000


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def controller_uid(obj: Mapping[str, JSON]) -> str | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def is_child_of(child: Mapping[str, JSON], run_uid: str) -> bool:
    """Owned by this run's uid, in the owner reference and the label alike; a
    Job that only claims a run's name (or a stale namesake's uid) is ignored."""
    labels = child.get("metadata", {}).get("labels") or {}
    return controller_uid(child) == run_uid and labels.get(LABEL_JOB_UID) == run_uid


def step_and_number(child: Mapping[str, JSON]) -> tuple[str, int] | None:
    labels = child.get("metadata", {}).get("labels") or {}
    try:
        return str(labels[LABEL_STEP]), int(labels[LABEL_ATTEMPT])
    except (KeyError, ValueError):
        return None


def termination(pod: Mapping[str, JSON] | None) -> Mapping[str, JSON] | None:
    """The step container's ``terminated`` state, if it has ended."""
    if pod is None:
        return None
    for status in pod.get("status", {}).get("containerStatuses") or ():
        if status.get("name") == CONTAINER:
            terminated = (status.get("state") or {}).get("terminated")
            if terminated:
                return dict(terminated)
    return None


def _job_condition(job: Mapping[str, JSON], kind: str) -> Mapping[str, JSON] | None:
    for condition in job.get("status", {}).get("conditions") or ():
        if condition.get("type") == kind and condition.get("status") == "True":
            return dict(condition)
    return None


def _cut(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MESSAGE_CAP else text[: MESSAGE_CAP - 3] + "..."


def attempt_of(
    job: Mapping[str, JSON],
    pod: Mapping[str, JSON] | None,
    *,
    pod_vanished: bool = False,
    log: str | None = None,
    result_cap: int | None = None,
) -> Attempt | None:
    """The attempt a child Job stands for, or None if it is not one of ours.

    ``pod_vanished``: a pod of this Job was seen and then deleted before its
    container terminated. ``log``: the pod log, when the result is framed
    there (an attempt whose result waits for its log stays RUNNING).
    ``result_cap``: the operator's cap on a framed result, whatever the pod says.
    """
    ident = step_and_number(job)
    if ident is None:
        return None
    step, number = ident
    name = job.get("metadata", {}).get("name")
    status = job.get("status", {})
    started = parse_time(status.get("startTime")) or parse_time(job["metadata"].get("creationTimestamp"))
    base = Attempt(step=step, number=number, phase=AttemptPhase.RUNNING, started_at=started, child=name)

    def ended(
        phase: AttemptPhase, message: str | None, at: str | None, result: Result | None = None
    ) -> Attempt:
        finished = parse_time(at) or parse_time(status.get("completionTime"))
        return dataclasses.replace(base, phase=phase, message=message, finished_at=finished, result=result)

    deadline = _job_condition(job, "Failed") or _job_condition(job, "FailureTarget")
    if deadline is not None and deadline.get("reason") == "DeadlineExceeded":
        limit = job.get("spec", {}).get("activeDeadlineSeconds")
        message = f"timed out after {limit}s" if limit else "timed out"
        return ended(AttemptPhase.FAILED, message, deadline.get("lastTransitionTime"))

    terminated = termination(pod)
    if terminated is not None:
        at = terminated.get("finishedAt")
        code = int(terminated.get("exitCode") or 0)
        if code != 0 and pod is not None and pod.get("metadata", {}).get("deletionTimestamp"):
            return ended(AttemptPhase.LOST, "the step's pod was deleted before it finished", at)
        if code != 0 and terminated.get("reason") == "OOMKilled":
            return ended(AttemptPhase.FAILED, f"out of memory (exit code {code})", at)
        report = read_report(str(terminated.get("message") or ""), code, result_cap=result_cap)
        if isinstance(report, Framed):
            if log is None:
                return base  # the result is in the log, not read yet
            report = read_framed(report, log, result_cap=result_cap)
        if isinstance(report, Failure):
            return ended(AttemptPhase.FAILED, _cut(report.message), at)
        return ended(AttemptPhase.SUCCEEDED, None, at, report)

    if pod is not None:
        pod_status = pod.get("status", {})
        reason = pod_status.get("reason")
        if pod_status.get("phase") == "Failed" or reason in INFRA_REASONS:
            detail = pod_status.get("message") or reason or "the pod failed before the step ran"
            return ended(AttemptPhase.LOST, _cut(f"{reason or 'PodFailed'}: {detail}"), None)
        if pod.get("metadata", {}).get("deletionTimestamp") and pod_status.get("phase") != "Running":
            return ended(AttemptPhase.LOST, "the step's pod was deleted", None)

    if pod_vanished:
        return ended(AttemptPhase.LOST, "the step's pod was deleted before it finished", None)
    failed = deadline
    if failed is not None:
        detail = failed.get("message") or failed.get("reason") or "the Job failed"
        return ended(
            AttemptPhase.LOST, _cut(f"the step's pod is gone: {detail}"), failed.get("lastTransitionTime")
        )
    if _job_condition(job, "Complete") is not None and pod is None:
        return ended(AttemptPhase.LOST, "the step's pod is gone and its result with it", None)
    return base


def needs_log(pod: Mapping[str, JSON] | None, result_cap: int | None = None) -> Framed | None:
    """Whether this pod ended well with its result framed in its log (within the cap)."""
    terminated = termination(pod)
    if terminated is None or int(terminated.get("exitCode") or 0) != 0:
        return None
    report = read_report(str(terminated.get("message") or ""), 0, result_cap=result_cap)
    return report if isinstance(report, Framed) else None
