"""Which status changes are worth a Kubernetes Event, and what it says."""

from __future__ import annotations

from datetime import UTC, datetime

from kwf.api import Condition, JobPhase, JobStatus, StepPhase, StepStatus
from kwf.operator.events import MESSAGE_CAP, RateLimit, changes, with_held

T = datetime(2030, 1, 1, tzinfo=UTC)


def status(phase: JobPhase, *steps: StepStatus, message: str | None = None) -> JobStatus:
    return JobStatus(phase=phase, steps=list(steps), message=message)


def step(phase: StepPhase, attempts: int = 1, message: str | None = None) -> StepStatus:
    return StepStatus(name="fetch", phase=phase, attempts=attempts, message=message)


def test_a_phase_change_is_one_event_and_a_failed_run_a_warning() -> None:
    assert changes(status(JobPhase.PENDING), status(JobPhase.RUNNING)) == [
        ("Normal", "Running", "run is running")
    ]
    failed = status(JobPhase.FAILED, message="step fetch failed")
    assert changes(status(JobPhase.RUNNING), failed) == [
        ("Warning", "Failed", "run is failed: step fetch failed")
    ]


def test_no_change_no_event() -> None:
    same = status(JobPhase.RUNNING, step(StepPhase.RUNNING))
    assert changes(same, same) == []


def test_a_step_failing_for_good_is_a_warning_once() -> None:
    before = status(JobPhase.RUNNING, step(StepPhase.RUNNING))
    after = status(JobPhase.RUNNING, step(StepPhase.FAILED, message="exit code 3"))
    assert changes(before, after) == [("Warning", "StepFailed", "step fetch failed: exit code 3")]
    assert changes(after, after) == []


def test_a_retry_is_an_event_whether_or_not_the_backoff_was_seen() -> None:
    running = status(JobPhase.RUNNING, step(StepPhase.RUNNING, 1))
    waiting = status(JobPhase.RUNNING, step(StepPhase.WAITING, 1, "exit code 3"))
    assert changes(running, waiting) == [
        ("Warning", "StepRetrying", "step fetch attempt 1 failed: exit code 3")
    ]
    # The failure noticed after its backoff had passed: straight to attempt 2.
    second = status(JobPhase.RUNNING, step(StepPhase.RUNNING, 2))
    assert changes(running, second) == [("Warning", "StepRetrying", "step fetch attempt 1 failed")]
    # From Waiting to the next attempt is not a second failure.
    assert changes(waiting, second) == []


def stalled(message: str) -> JobStatus:
    condition = Condition(
        type="Stalled", status="True", reason="InvalidSpec", message=message, last_transition_time=T
    )
    return JobStatus(phase=JobPhase.PENDING, conditions=[condition], message=message)


def test_a_stalled_run_is_a_warning_naming_the_problem_once() -> None:
    first = stalled("spec.steps[0].when: does not parse")
    assert changes(JobStatus(), first) == [("Warning", "InvalidSpec", "spec.steps[0].when: does not parse")]
    assert changes(first, first) == []
    other = stalled("cycle: a -> b -> a")
    assert changes(first, other) == [("Warning", "InvalidSpec", "cycle: a -> b -> a")]


def test_a_failed_run_is_stalled_too_and_that_is_no_second_event() -> None:
    condition = Condition(
        type="Stalled", status="True", reason="Failed", message="step fetch failed", last_transition_time=T
    )
    failed = JobStatus(phase=JobPhase.FAILED, conditions=[condition], message="step fetch failed")
    assert changes(JobStatus(phase=JobPhase.RUNNING), failed) == [
        ("Warning", "Failed", "run is failed: step fetch failed")
    ]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_events_of_one_object_pass_in_a_burst_then_one_per_refill() -> None:
    clock = Clock()
    limit = RateLimit(burst=10, refill_seconds=10.0, clock=clock)
    passed = [limit.take("run-a") for _ in range(25)]
    assert passed[:10] == [0] * 10 and passed[10:] == [None] * 15
    assert limit.take("run-b") == 0  # every object has its own bucket
    clock.now += 10.0
    assert limit.take("run-a") == 15  # the next one says how many were held back
    assert limit.take("run-a") is None
    clock.now += 25.0
    assert [limit.take("run-a") for _ in range(3)] == [1, 0, None]


def test_the_count_held_back_fits_in_the_message_cap() -> None:
    message = with_held("x" * 5000, 15)
    assert len(message) == MESSAGE_CAP
    assert message.endswith("(15 earlier events not posted: too many)")
    assert with_held("step a failed", 0) == "step a failed"
