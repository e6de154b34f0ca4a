"""plan(): retries and backoff, infrastructure losses, timeouts, the deadline, onFailure."""

from __future__ import annotations

from datetime import timedelta

from kwf.engine.types import Attempt, AttemptPhase, Limits
from tests.unit.engine.plan_builders import T0, Run, job, step

RETRY = {"limit": 2, "backoff": {"seconds": 10, "factor": 3, "maxSeconds": 20}}


def test_a_failed_step_is_retried_after_an_exponential_backoff_capped() -> None:
    run = Run(job(step("a", retry=RETRY)))
    run.plan()
    run.finish("a", AttemptPhase.FAILED, message="exit 1")
    result = run.plan()
    entry = run.step("a")
    assert entry.phase == "Waiting" and entry.next_attempt_at == T0 + timedelta(seconds=10)
    assert result.requeue_after == 10
    assert run.launches() == []
    run.tick(9)
    assert run.launches(run.plan()) == []
    run.tick(1)
    run.plan()
    assert run.launched == [("a", 1), ("a", 2)]
    run.finish("a", AttemptPhase.FAILED, message="exit 1")
    run.plan()
    assert run.step("a").next_attempt_at == run.now + timedelta(seconds=20)  # 30, capped
    run.tick(20)
    run.plan()
    run.finish("a", AttemptPhase.FAILED, message="exit 2")
    run.plan()
    assert run.step("a").phase == "Failed" and run.step("a").attempts == 3
    assert run.step("a").message == "failed after 3 attempts: exit 2"
    assert run.status.phase == "Failed"


def test_a_retry_that_succeeds_lets_the_run_succeed() -> None:
    run = Run(job(step("a", retry={"limit": 1, "backoff": {"seconds": 0}})))
    run.plan()
    run.finish("a", AttemptPhase.FAILED)
    run.plan()
    assert run.launched == [("a", 1), ("a", 2)]
    run.finish("a")
    run.plan()
    assert run.status.phase == "Succeeded"


def test_a_lost_attempt_is_launched_again_without_spending_the_budget() -> None:
    run = Run(job(step("a")), limits=Limits(infra_retries=2))
    run.plan()
    run.finish("a", AttemptPhase.LOST, message="pod evicted")
    run.plan()
    assert run.launched == [("a", 1), ("a", 2)]
    entry = run.step("a")
    assert (entry.attempts, entry.infra_retries, entry.last_attempt) == (1, 1, 2)
    run.finish("a", AttemptPhase.LOST, message="node lost")
    run.plan()
    run.finish("a", AttemptPhase.LOST, message="node lost")
    run.plan()
    assert run.launched == [("a", 1), ("a", 2), ("a", 3)]
    assert run.step("a").phase == "Failed"
    assert run.step("a").message == "lost to the infrastructure 3 times, over the limit of 2: node lost"


def test_a_running_attempt_past_its_timeout_is_stopped_and_retried() -> None:
    run = Run(job(step("a", timeoutSeconds=30, retry={"limit": 1, "backoff": {"seconds": 5}})))
    run.plan()
    run.tick(10)
    assert run.plan().requeue_after == 20
    run.tick(20)
    result = run.plan()
    (stop,) = run.stops(result)
    assert (stop.step, stop.number, stop.reason) == ("a", 1, "attempt 1 passed its timeout of 30s")
    assert run.step("a").phase == "Waiting"
    run.tick(5)
    run.plan()
    assert run.launched == [("a", 1), ("a", 2)]


def test_the_run_deadline_stops_everything_and_fails_the_run() -> None:
    run = Run(job(step("a"), step("b", "a"), activeDeadlineSeconds=60))
    assert run.plan().requeue_after == 60
    run.tick(60)
    run.plan()
    assert [s.step for s in run.stops()] == ["a"]
    assert run.phases() == {"a": "Failed", "b": "Cancelled"}
    assert run.status.phase == "Failed"
    assert run.condition("Ready") == ("False", "DeadlineExceeded")
    assert run.condition("Stalled") == ("True", "DeadlineExceeded")
    assert run.status.message == "the run passed its deadline of 60s"
    # finished runs stay finished
    run.tick(1)
    again = run.plan()
    assert again.actions == () and run.condition("Ready") == ("False", "DeadlineExceeded")


def test_a_failure_stops_new_launches_and_cancels_what_depends_on_it() -> None:
    run = Run(job(step("a"), step("b"), step("c", "a"), step("d")))
    run.plan()
    run.finish("a", AttemptPhase.FAILED, message="boom")
    run.plan()
    assert run.phases() == {"a": "Failed", "b": "Running", "c": "Cancelled", "d": "Running"}
    assert run.status.phase == "Running"
    assert run.step("c").message == "not run: step a failed"
    run.finish("b")
    run.finish("d")
    run.plan()
    assert run.status.phase == "Failed" and run.status.message == "step a failed: boom"


def test_failing_run_launches_nothing_new() -> None:
    run = Run(job(step("a"), step("b"), step("c", "b"), parallelism=2))
    run.plan()
    run.finish("a", AttemptPhase.FAILED)
    run.plan()
    assert run.launches() == []
    assert run.step("c").phase == "Pending"


def test_on_failure_handler_is_not_needed_when_the_primary_succeeds() -> None:
    run = Run(job(step("a", onFailure="h"), step("h"), step("b", "a")))
    run.plan()
    assert run.launches() == ["a"]
    run.finish("a")
    run.plan()
    assert run.phases() == {"a": "Succeeded", "h": "Skipped", "b": "Running"}
    assert run.step("h").message == "not needed"
    run.finish("b")
    run.plan()
    assert run.status.phase == "Succeeded"


def test_on_failure_handler_stands_in_for_its_primary() -> None:
    run = Run(
        job(
            step("a", onFailure="h", saveAs="answer"),
            step("h"),
            step("b", "a", env=[{"name": "ANSWER", "value": "{{ steps.a.output }}"}]),
        )
    )
    run.plan()
    run.finish("a", AttemptPhase.FAILED, message="boom")
    run.plan()
    assert run.launches() == ["h"]
    assert run.status.phase == "Running"
    run.finish("h", output="fallback")
    (launch,) = run.plan().actions
    assert run.phases() == {"a": "Recovered", "h": "Succeeded", "b": "Running"}
    assert run.status.shared_state == {"answer": "fallback"}
    assert launch.step.env is not None and launch.step.env[0].value == "fallback"
    run.finish("b")
    run.plan()
    assert run.status.phase == "Succeeded"


def test_a_failing_handler_fails_the_run() -> None:
    run = Run(job(step("a", onFailure="h"), step("h"), step("b", "a")))
    run.plan()
    run.finish("a", AttemptPhase.FAILED, message="boom")
    run.plan()
    run.finish("h", AttemptPhase.FAILED, message="also")
    run.plan()
    assert run.phases() == {"a": "Failed", "h": "Failed", "b": "Cancelled"}
    assert run.status.phase == "Failed"


def test_an_attempt_the_status_missed_is_adopted_not_launched_again() -> None:
    run = Run(job(step("a")))
    # a launch was carried out but its status write was lost
    run.attempts["a"] = [Attempt("a", 1, AttemptPhase.RUNNING, started_at=T0)]
    result = run.plan()
    assert result.actions == ()
    assert (run.step("a").phase, run.step("a").last_attempt, run.step("a").attempts) == ("Running", 1, 1)
