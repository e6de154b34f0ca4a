"""The whole status of a run stays within Limits.status_bytes, whatever its steps return."""

from __future__ import annotations

import json
from typing import Any

from kwf.api import JobPhase, StepPhase
from kwf.engine.types import AttemptPhase, Limits

from .plan_builders import Run, job, step


def status_bytes(run: Run) -> int:
    return len(json.dumps(run.status.dump(), separators=(",", ":"), ensure_ascii=False).encode())


def test_sixty_outputs_of_32_kib_do_not_wedge_the_run() -> None:
    names = [f"s{i}" for i in range(60)]
    run = Run(job(*(step(name) for name in names)))
    run.plan()
    for name in names:
        run.finish(name, output="o" * (32 * 1024 - 2))
    run.plan()
    assert run.status.phase is JobPhase.SUCCEEDED
    assert status_bytes(run) <= Limits().status_bytes
    previews = [name for name in names if "$truncated" in (run.status.outputs[name] or {})]
    assert 20 < len(previews) < 60  # those that fit are kept whole
    assert run.step(previews[0]).message == (
        "output of 32 KiB kept as a preview: the run's status is near its budget of 1 MiB"
    )


def test_a_small_budget_holds_across_passes() -> None:
    limits = Limits(status_bytes=64 * 1024, state_bytes=16 * 1024)
    run = Run(job(*(step(f"s{i}") for i in range(10))), limits=limits)
    for index in range(10):
        run.plan()
        run.finish(f"s{index}", output={"k": "v" * 8000}, state={f"k{index}": "w" * 1000})
        run.tick(1)
    run.plan()
    assert run.status.phase is JobPhase.SUCCEEDED
    assert status_bytes(run) <= limits.status_bytes


def test_steps_added_per_run_are_capped() -> None:
    run = Run(job(step("a")), limits=Limits(max_added_steps=5))
    run.plan()
    run.finish("a", steps=[step(f"n{i}", "a") for i in range(6)])
    run.plan()
    assert run.phases() == {"a": StepPhase.FAILED}
    assert run.step("a").message == (
        "result.steps holds 6 steps; the run may add 5 more (Limits.max_added_steps in all)"
    )
    assert run.status.phase is JobPhase.FAILED


def test_steps_added_over_the_status_budget_fail_their_step() -> None:
    limits = Limits(status_bytes=48 * 1024, state_bytes=8 * 1024)
    big = [{**step(f"n{i}", "a"), "script": {"source": "x" * 4000}} for i in range(10)]
    run = Run(job(step("a")), limits=limits)
    run.plan()
    run.finish("a", steps=big)
    run.plan()
    message = run.step("a").message or ""
    assert message.startswith("the result would take the run's status over its budget of 48 KiB")
    assert run.status.phase is JobPhase.FAILED


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"a": value}
    return value


def test_deep_results_fail_their_step_or_are_previewed() -> None:
    run = Run(job(step("a"), step("b")))
    run.plan()
    run.finish("a", state=deep(5000))
    run.finish("b", output=[deep(5000)])
    run.plan()
    assert run.step("a").message == "result.state is nested deeper than 64 levels"
    assert run.step("b").phase is StepPhase.SUCCEEDED
    assert run.step("b").message == "output nested deeper than 64 levels: kept as a preview"
    assert status_bytes(run) < 64 * 1024


def test_messages_are_bounded_in_bytes_in_large_runs() -> None:
    names = [f"s{i}" for i in range(800)]
    run = Run(job(*(step(name) for name in names)))
    run.plan()
    for name in names:
        run.finish(name, AttemptPhase.FAILED, message="é" * 5000)
    run.plan()
    assert run.status.phase is JobPhase.FAILED
    assert max(len((s.message or "").encode()) for s in run.status.steps) <= 330
    assert status_bytes(run) <= Limits().status_bytes


def test_usage_is_bounded_by_model() -> None:
    from kwf.engine.types import Usage

    run = Run(job(step("a")))
    run.plan()
    run.finish("a", usage={f"model-{i}-{'m' * 500}": Usage(1, 1, 2) for i in range(100)})
    run.plan()
    assert len(run.status.usage) == 17
    assert run.status.usage["(other models)"].total_tokens == 2 * 84
    assert max(len(name) for name in run.status.usage) == 128


def test_a_run_whose_entries_fill_the_budget_still_succeeds() -> None:
    limits = Limits(status_bytes=64 * 1024, state_bytes=16 * 1024)
    names = [f"s{i}" for i in range(60)]
    run = Run(job(*(step(name) for name in names)), limits=limits)
    run.plan()
    for name in names:
        run.finish(name, output={"n": name})
    run.plan()
    assert run.status.phase is JobPhase.SUCCEEDED
    assert run.status.outputs["s0"] == {
        "$truncated": "output of 10 bytes not kept: the run's status is at its budget"
    }
    assert status_bytes(run) <= limits.status_bytes
