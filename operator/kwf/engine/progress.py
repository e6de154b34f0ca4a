"""One step's progress: its last status folded with the attempts observed now.

A step's status entry is the memory of what was decided (which attempt is
current, how much retry budget is spent); the attempts observed are the
world. Folding them is level-based: the same status and the same attempts
give the same answer, and an attempt the status does not know yet (its
launch was written, the status was not) is adopted, never launched again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from kwf.api import Step, StepPhase, StepStatus
from kwf.engine.types import Attempt, AttemptPhase, Limits, Stop

MESSAGE_LIMIT = 1024


def short(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` cut to ``limit`` characters and about as many bytes of UTF-8, marked when cut."""
    if len(text) <= limit and (text.isascii() or len(text.encode()) <= limit):
        return text
    if text.isascii():
        return text[: limit - 1] + "…"
    return text.encode()[: limit - 3].decode(errors="ignore") + "…"


def backoff_seconds(step: Step, retry: int) -> float:
    """The wait before retry ``retry`` (1, 2, ...): seconds * factor**(retry-1), capped."""
    backoff = step.retry.backoff
    try:
        wait = backoff.seconds * backoff.factor ** (retry - 1)
    except OverflowError:
        wait = backoff.max_seconds
    return float(min(wait, backoff.max_seconds))


_FINISHED = frozenset(phase for phase in StepPhase if phase.finished)
#: Fields read on every pass, kept as plain attributes: plan() touches each step each time.
_HOT = ("phase", "last_attempt", "attempts")


class StepRecord:
    """A step's status entry while a pass works on it: changes are kept apart
    so an untouched step costs nothing to write back."""

    __slots__ = (
        "attempts",
        "changes",
        "finished",
        "last_attempt",
        "message_bytes",
        "old",
        "phase",
        "spec",
        "stop_reason",
        "success",
        "wake",
    )

    def __init__(self, old: StepStatus, spec: Step | None, message_bytes: int = MESSAGE_LIMIT) -> None:
        self.old = old
        self.message_bytes = message_bytes  # smaller in large runs: the status holds them all
        self.spec = spec
        self.changes: dict[str, Any] = {}
        self.phase: StepPhase = old.phase
        self.finished = old.phase in _FINISHED
        self.last_attempt: int = old.last_attempt
        self.attempts: int = old.attempts
        self.success: Attempt | None = None  # finished well, to be settled in completion order
        self.stop_reason: str | None = None  # why a running attempt of it is stopped
        self.wake: datetime | None = None  # when this step wants another look

    @property
    def name(self) -> str:
        return self.old.name

    def get(self, field: str) -> Any:
        return self.changes[field] if field in self.changes else getattr(self.old, field)

    def set(self, **changes: Any) -> None:
        self.changes.update(changes)
        if "phase" in changes:
            self.phase = changes["phase"]
            self.finished = self.phase in _FINISHED
        if "last_attempt" in changes:
            self.last_attempt = changes["last_attempt"]
        if "attempts" in changes:
            self.attempts = changes["attempts"]

    def finish(self, phase: StepPhase, now: datetime, message: str | None) -> None:
        self.set(
            phase=phase,
            finished_at=now,
            next_attempt_at=None,
            message=None if message is None else short(message, self.message_bytes),
        )

    def build(self) -> StepStatus:
        if not self.changes:
            return self.old
        old = self.old
        changed = {k: v for k, v in self.changes.items() if getattr(old, k) != v}
        return old.model_copy(update=changed) if changed else old

    def wake_at(self, when: datetime) -> None:
        if self.wake is None or when < self.wake:
            self.wake = when


def fold(record: StepRecord, attempts: Sequence[Attempt], now: datetime, limits: Limits) -> Stop | None:
    """Bring ``record`` up to date with its observed ``attempts``.

    Returns a Stop for an attempt past its timeout. A success is left in
    ``record.success``: it is settled later, in completion order with the rest.
    """
    if not attempts and record.phase is not StepPhase.RUNNING:
        return None
    last = record.last_attempt
    if any(a.number > last for a in attempts):
        newer = sorted((a for a in attempts if a.number > last), key=lambda a: a.number)
        _adopt(record, attempts, newer, now)
    if record.phase is not StepPhase.RUNNING:
        return None
    current = next((a for a in attempts if a.number == record.last_attempt), None)
    if current is None:
        return None  # launched, not seen yet
    if current.child:
        record.set(job=current.child)
    if current.phase is AttemptPhase.RUNNING:
        return _check_timeout(record, current, now)
    if current.phase is AttemptPhase.SUCCEEDED:
        record.success = current
    elif current.phase is AttemptPhase.FAILED:
        failed(record, current.message or "the step failed", current.finished_at or now, now)
    else:
        lost(record, current.message or "lost", now, limits)
    return None


def _adopt(record: StepRecord, attempts: Sequence[Attempt], newer: list[Attempt], now: datetime) -> None:
    """Launches the status missed: count them, then follow the latest."""
    if record.phase is StepPhase.RUNNING:
        # the current attempt ended before the write that settled it was lost
        current = next((a for a in attempts if a.number == record.last_attempt), None)
        if current is not None and current.phase is AttemptPhase.LOST:
            record.set(infra_retries=record.get("infra_retries") + 1, attempts=max(record.attempts - 1, 0))
    for attempt in newer[:-1]:
        if attempt.phase is AttemptPhase.LOST:
            record.set(infra_retries=record.get("infra_retries") + 1)
        else:
            record.set(attempts=record.attempts + 1)
    latest = newer[-1]
    record.set(
        phase=StepPhase.RUNNING,
        last_attempt=latest.number,
        attempts=record.attempts + 1,
        started_at=record.get("started_at") or latest.started_at or now,
        finished_at=None,
        next_attempt_at=None,
        message=None,
    )


def _check_timeout(record: StepRecord, current: Attempt, now: datetime) -> Stop | None:
    spec = record.spec
    if spec is None or spec.timeout_seconds is None or current.started_at is None:
        return None
    deadline = current.started_at + timedelta(seconds=spec.timeout_seconds)
    if now < deadline:
        record.wake_at(deadline)
        return None
    reason = f"attempt {current.number} passed its timeout of {spec.timeout_seconds}s"
    failed(record, reason, now, now)
    record.stop_reason = reason
    return Stop(step=record.name, number=current.number, reason=reason)


def failed(record: StepRecord, message: str, at: datetime, now: datetime) -> None:
    """The current attempt failed: retry after the backoff while budget is left."""
    spec = record.spec
    spent = record.attempts
    limit = spec.retry.limit if spec is not None else 0
    number = record.last_attempt
    if spent < limit + 1:
        wait = backoff_seconds(spec, spent) if spec is not None else 0.0
        retry_at = at + timedelta(seconds=wait)
        record.set(
            phase=StepPhase.WAITING,
            next_attempt_at=retry_at,
            message=short(
                f"attempt {number} failed: {message}; retry {spent} of {limit} after {wait:g}s",
                record.message_bytes,
            ),
        )
        record.wake_at(retry_at)
        return
    if limit:
        message = f"failed after {spent} attempts: {message}"
    record.finish(StepPhase.FAILED, now, message)


def lost(record: StepRecord, message: str, now: datetime, limits: Limits) -> None:
    """The infrastructure lost the current attempt: launch it again, budget untouched."""
    infra = record.get("infra_retries") + 1
    record.set(infra_retries=infra, attempts=max(record.attempts - 1, 0))
    if record.spec is not None and infra <= limits.infra_retries:
        record.set(
            phase=StepPhase.WAITING,
            next_attempt_at=now,
            message=short(
                f"attempt {record.last_attempt} lost ({message}); launching it again", record.message_bytes
            ),
        )
        record.wake_at(now)
        return
    record.finish(
        StepPhase.FAILED,
        now,
        f"lost to the infrastructure {infra} times, over the limit of {limits.infra_retries}: {message}",
    )


def fresh(name: str) -> StepStatus:
    return StepStatus(name=name)
