"""How a run's health reads to Kubernetes tools: Ready, Reconciling, Stalled.

Flux, Argo CD and kstatus judge a resource by these three conditions in the
metav1.Condition shape. Their reasons come from one small closed enum so the
operator, the CLI and the tests agree on the words.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from kwf.api import Condition, JobPhase

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"


class Reason(enum.StrEnum):
    PROGRESSING = "Progressing"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    INVALID_SPEC = "InvalidSpec"
    WORKFLOW_NOT_FOUND = "WorkflowNotFound"
    INVALID_WORKFLOW = "InvalidWorkflow"

    @property
    def stalled(self) -> bool:
        """Whether a run with this reason cannot progress without a change of spec."""
        return self in _STALLED

    @property
    def reconciling(self) -> bool:
        """Whether the operator is still working towards a final state."""
        return self in (Reason.PROGRESSING, Reason.RUNNING)


_STALLED = frozenset(
    {
        Reason.FAILED,
        Reason.DEADLINE_EXCEEDED,
        Reason.INVALID_SPEC,
        Reason.WORKFLOW_NOT_FOUND,
        Reason.INVALID_WORKFLOW,
    }
)

Status = Literal["True", "False", "Unknown"]


def _flag(value: bool) -> Status:
    return "True" if value else "False"


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: Status,
    reason: Reason,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """Conditions with ``type_`` set; lastTransitionTime moves only when the status does."""
    result: list[Condition] = []
    found = False
    for old in conditions:
        if old.type != type_:
            result.append(old)
            continue
        found = True
        if (old.status, old.reason, old.message, old.observed_generation) == (
            status,
            str(reason),
            message,
            generation,
        ):
            result.append(old)
        else:
            since = old.last_transition_time if old.status == status else now
            result.append(_condition(type_, status, reason, message, since, generation))
    if not found:
        result.append(_condition(type_, status, reason, message, now, generation))
    return result


def _condition(
    type_: str, status: Status, reason: Reason, message: str, since: datetime, generation: int | None
) -> Condition:
    return Condition(
        type=type_,
        status=status,
        reason=str(reason),
        message=message[:32768],
        last_transition_time=since,
        observed_generation=generation,
    )


def health_conditions(
    conditions: Sequence[Condition],
    reason: Reason,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """Ready, Reconciling and Stalled as they follow from one reason.

    The operator calls this directly for problems found before plan() can run
    (a missing or invalid Workflow).
    """
    ready = reason is Reason.SUCCEEDED
    result = set_condition(conditions, READY, _flag(ready), reason, message, now, generation)
    result = set_condition(result, RECONCILING, _flag(reason.reconciling), reason, message, now, generation)
    return set_condition(result, STALLED, _flag(reason.stalled), reason, message, now, generation)


def reason_for(phase: JobPhase, *, suspended: bool = False) -> Reason:
    """The reason of an ordinary run in ``phase``."""
    if phase is JobPhase.SUCCEEDED:
        return Reason.SUCCEEDED
    if phase is JobPhase.FAILED:
        return Reason.FAILED
    if phase is JobPhase.CANCELLED:
        return Reason.CANCELLED
    if suspended:
        return Reason.SUSPENDED
    return Reason.RUNNING if phase is JobPhase.RUNNING else Reason.PROGRESSING
