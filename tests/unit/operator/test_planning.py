"""A large run is read and planned off the event loop: the loop that answers
/healthz and every other run keeps turning while it plans. A small run is
planned inline, where the hand-over to a thread would cost more."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bench.plan import T0, dag
from kwf.api import Job, JobStatus
from kwf.engine.plan import plan
from kwf.operator.planning import HEAVY_STEPS, read_run, run_sized, size_of


@pytest.fixture
def frequent_switches() -> Iterator[None]:
    # The loop's thread gets its turn every 0.5 ms instead of 5: the test then
    # does not depend on how fast this machine plans.
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    yield
    sys.setswitchinterval(before)


async def turns_during(work: Callable[[], Any]) -> int:
    """How often the loop ran other tasks while ``work()`` was awaited."""
    turns = 0
    stop = False

    async def other_task() -> None:
        nonlocal turns
        while not stop:
            turns += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(other_task())
    await asyncio.sleep(0)
    before = turns
    await work()
    during = turns - before
    stop = True
    await ticking
    return during


def run_body(size: int) -> dict[str, Any]:
    spec = dag(size)
    return {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": "Job",
        "metadata": {"name": "big", "namespace": "team", "uid": "u", "generation": 1},
        "spec": spec.model_dump(by_alias=True, exclude_none=True),
    }


async def test_the_loop_keeps_turning_while_a_1000_step_run_plans(frequent_switches: None) -> None:
    body = run_body(1000)
    size = size_of(body)
    assert size == 1000 >= HEAVY_STEPS
    job = read_run(body)
    spec = job.spec

    async def planning() -> None:
        decision = await run_sized(size, plan, spec, JobStatus(), {}, T0, job="big", namespace="team")
        assert decision.actions  # the first layer launches

    async def reading() -> None:
        assert await run_sized(size, read_run, body) == job

    assert await turns_during(planning) > 0
    assert await turns_during(reading) > 0


async def test_a_small_run_is_planned_inline() -> None:
    body = run_body(20)
    spec = Job.model_validate(body).spec

    async def planning() -> None:
        await run_sized(size_of(body), plan, spec, JobStatus(), {}, T0, job="small", namespace="team")

    assert await turns_during(planning) == 0


def test_the_size_counts_steps_wherever_the_run_holds_them() -> None:
    steps = [{"name": f"s{i}"} for i in range(300)]
    assert size_of({"spec": {"workflowRef": {"name": "w"}}}, {"spec": {"steps": steps}}) == 300
    assert size_of({"spec": {}, "status": {"workflow": {"steps": steps}, "addedSteps": steps}}) == 600
    assert size_of({"spec": {"steps": "not a list"}}) == 0
