"""plan(): suspend, cancel, shared state, graph edits, returned steps, reruns."""

from __future__ import annotations

from datetime import timedelta

from kwf.engine.types import AttemptPhase, Limits
from tests.unit.engine.plan_builders import Run, job, step


def test_suspend_starts_nothing_new_and_lets_running_steps_finish() -> None:
    run = Run(job(step("a"), step("b", "a")))
    run.plan()
    run.spec = job(step("a"), step("b", "a"), suspend=True)
    run.finish("a")
    run.plan()
    assert run.launches() == [] and run.phases() == {"a": "Succeeded", "b": "Pending"}
    assert run.condition("Ready") == ("False", "Suspended")
    assert run.condition("Reconciling") == ("False", "Suspended")
    run.spec = job(step("a"), step("b", "a"))
    run.plan()
    assert run.launches() == ["b"]


def test_cancel_stops_running_steps_and_cancels_the_rest() -> None:
    run = Run(job(step("a"), step("b", "a"), step("c")))
    run.plan()
    run.spec = job(step("a"), step("b", "a"), step("c"), cancel=True)
    run.plan()
    assert sorted((s.step, s.reason) for s in run.stops()) == [("a", "cancelled"), ("c", "cancelled")]
    assert set(run.phases().values()) == {"Cancelled"}
    assert run.status.phase == "Cancelled" and run.status.finished_at == run.now
    assert run.condition("Ready") == ("False", "Cancelled")


def test_merges_land_in_completion_order_once() -> None:
    run = Run(job(step("a"), step("b"), step("c", saveAs="out.c"), initialState={"n": 0, "keep": 1}))
    run.plan()
    run.finish("b", state={"n": 2, "by": "b"})
    run.tick(-1)  # a finished a second before b
    run.finish("a", state={"n": 1, "by": "a", "keep": None})
    run.tick(1)
    run.plan()
    assert run.status.shared_state == {"n": 2, "by": "b"}
    run.finish("c", output=[1])
    run.plan()
    run.plan()
    assert run.status.shared_state == {"n": 2, "by": "b", "out": {"c": [1]}}


def test_the_step_that_would_overflow_the_state_fails() -> None:
    run = Run(job(step("a")), limits=Limits(state_bytes=1024))
    run.plan()
    run.finish("a", state={"big": "x" * 2000})
    run.plan()
    assert run.step("a").phase == "Failed"
    assert run.step("a").message == "shared state would be 2 KiB, over the limit of 1 KiB"
    assert run.status.shared_state == {}


def test_steps_added_to_the_spec_join_and_removed_pending_ones_are_dropped() -> None:
    run = Run(job(step("a"), step("b", "a"), step("gone", "a")))
    run.plan()
    run.spec = job(step("a"), step("b", "a"), step("new", "a"))
    run.finish("a")
    run.plan()
    assert run.phases() == {"a": "Succeeded", "b": "Running", "new": "Running"}


def test_started_steps_stay_as_they_ran_when_removed() -> None:
    run = Run(job(step("a"), step("b")))
    run.plan()
    run.finish("a")
    run.spec = job(step("b"))
    run.plan()
    assert run.phases() == {"b": "Running", "a": "Succeeded"}


def test_a_bad_graph_stalls_scheduling_and_keeps_observing() -> None:
    run = Run(job(step("a"), step("b", "a")))
    run.plan()
    run.spec = job(step("a"), step("b", "a", "c"), step("c", "b"))
    run.finish("a", state={"x": 1})
    run.plan()
    assert run.launches() == []
    assert run.step("a").phase == "Succeeded" and run.status.shared_state == {"x": 1}
    assert run.condition("Stalled") == ("True", "InvalidSpec")
    assert run.status.message == "cycle: b -> c -> b"


def test_returned_steps_join_the_graph() -> None:
    run = Run(job(step("a"), step("b", "a")))
    run.plan()
    run.finish("a", steps=[step("x", "a"), step("y", "x")])
    run.plan()
    assert run.launches() == ["b", "x"]
    assert [s["name"] for s in run.status.added_steps] == ["x", "y"]
    run.finish("x")
    run.plan()
    assert run.launches() == ["y"]
    assert run.status.progress == "2/4"


def test_invalid_returned_steps_fail_the_step() -> None:
    run = Run(job(step("a"), step("b")))
    run.plan()
    run.finish("a", steps=[step("b")])
    run.finish("b", steps=[step("z", "nope")])
    run.plan()
    assert run.step("a").message == "returned step 'b' clashes with a step of the same name"
    assert run.step("b").message == (
        "returned steps do not fit the graph: step z: dependsOn names unknown step 'nope'"
    )


def test_rerun_resets_a_failed_step_and_what_follows() -> None:
    run = Run(job(step("a"), step("b", "a"), step("c", "b"), step("d")))
    run.plan()
    run.finish("d")
    run.finish("a")
    run.plan()
    run.finish("b", AttemptPhase.FAILED, message="boom")
    run.plan()
    assert run.status.phase == "Failed"
    run.tick(60)
    run.spec = job(step("a"), step("b", "a"), step("c", "b"), step("d"), rerun={"id": "r1"})
    run.plan()
    assert run.status.phase == "Running" and run.status.rerun == "r1"
    assert run.launched[-1] == ("b", 2)
    assert run.phases() == {"a": "Succeeded", "b": "Running", "c": "Pending", "d": "Succeeded"}
    run.finish("b")
    run.plan()
    run.finish("c")
    run.plan()
    assert run.status.phase == "Succeeded"
    again = run.plan()
    assert again.actions == () and run.status.phase == "Succeeded"


def test_rerun_of_a_named_step_reruns_it_and_its_dependents() -> None:
    run = Run(job(step("a"), step("b", "a")))
    run.plan()
    run.finish("a")
    run.plan()
    run.finish("b")
    run.plan()
    run.spec = job(step("a"), step("b", "a"), rerun={"id": "x", "step": "a"})
    run.plan()
    assert run.launched == [("a", 1), ("b", 1), ("a", 2)]
    assert run.phases() == {"a": "Running", "b": "Pending"}


def test_a_lost_attempt_during_backoff_wait_is_stopped_not_counted() -> None:
    run = Run(job(step("a", timeoutSeconds=5, retry={"limit": 1, "backoff": {"seconds": 100}})))
    run.plan()
    run.tick(5)
    run.plan(carry_out=False)
    run.status = run.last.status  # type: ignore[union-attr]
    # the stop has not landed yet: the attempt still runs, and is stopped again
    run.tick(1)
    again = run.plan()
    assert [(s.step, s.number) for s in run.stops(again)] == [("a", 1)]
    assert run.step("a").next_attempt_at == run.now - timedelta(seconds=1) + timedelta(seconds=100)
