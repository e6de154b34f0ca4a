"""run_local: plan() and the local executor together, on real processes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from kwf.api import Job, JobPhase, JobStatus, StepPhase
from kwf.local.run import run_local
from kwf.local.source import SourceError, load_run

# Each step logs when it starts and ends (CLOCK_MONOTONIC is one clock for all
# processes). The first two wait until two have started, so overlap is certain
# whenever two may run; the later ones sleep a little, so a run that broke the
# limit would show it.
INTERVAL = """\
import json, os, time, pathlib
log = pathlib.Path(json.load(open(os.environ["KWF_PARAMS"]))["log"])
start = time.monotonic()
(log / (os.environ["KWF_STEP"] + ".start")).touch()
deadline = start + 30
while len(list(log.glob("*.start"))) < 2 and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(0.1)
(log / (os.environ["KWF_STEP"] + ".json")).write_text(json.dumps([start, time.monotonic()]))
"""


def job(steps: list[dict[str, Any]], **spec: Any) -> Job:
    return Job.model_validate({"metadata": {"name": "t"}, "spec": {"steps": steps, **spec}})


def read_intervals(folder: Path) -> list[list[float]]:
    return [json.loads(p.read_text()) for p in folder.glob("*.json")]


def max_overlap(intervals: list[list[float]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, delta in edges:
        running += delta
        peak = max(peak, running)
    return peak


async def test_never_more_steps_at_once_than_parallelism(tmp_path: Path) -> None:
    steps = [{"name": f"s{i}", "script": {"source": INTERVAL}} for i in range(6)]
    status = await run_local(job(steps, parallelism=2, params={"log": str(tmp_path)}))
    assert status.phase is JobPhase.SUCCEEDED, status.message
    intervals = read_intervals(tmp_path)
    assert len(intervals) == 6
    assert max_overlap(intervals) == 2


async def test_without_a_limit_independent_steps_all_run_at_once(tmp_path: Path) -> None:
    steps = [{"name": f"s{i}", "script": {"source": INTERVAL}} for i in range(4)]
    status = await run_local(job(steps, params={"log": str(tmp_path)}))
    assert status.phase is JobPhase.SUCCEEDED, status.message
    # Launched in one pass, before any could finish: all four started before the first ended.
    intervals = read_intervals(tmp_path)
    assert max(start for start, _ in intervals) < min(end for _, end in intervals)


async def test_retries_run_the_step_again(tmp_path: Path) -> None:
    log = tmp_path / "attempts"
    source = f"""\
import os, sys
with open({str(log)!r}, "a") as f:
    f.write(f"{{os.environ['KWF_ATTEMPT']}} {{os.getpid()}}\\n")
sys.exit(0 if os.environ["KWF_ATTEMPT"] == "3" else 1)
"""
    retry = {"limit": 5, "backoff": {"seconds": 0.05, "factor": 1}}
    status = await run_local(job([{"name": "flaky", "retry": retry, "script": {"source": source}}]))
    assert status.phase is JobPhase.SUCCEEDED, status.message
    lines = [line.split() for line in log.read_text().splitlines()]
    assert [number for number, _ in lines] == ["1", "2", "3"]
    assert len({pid for _, pid in lines}) == 3  # three processes, not one answer reused
    assert status.steps[0].attempts == 3


async def test_a_step_out_of_retries_fails_the_run_and_its_dependents_never_start() -> None:
    steps = [
        {
            "name": "bad",
            "retry": {"limit": 1, "backoff": {"seconds": 0}},
            "script": {"language": "shell", "source": "exit 7"},
        },
        {"name": "after", "dependsOn": ["bad"], "script": {"language": "shell", "source": "true"}},
    ]
    status = await run_local(job(steps))
    phases = {s.name: s.phase for s in status.steps}
    assert status.phase is JobPhase.FAILED
    assert phases["bad"] is StepPhase.FAILED and phases["after"] is not StepPhase.SUCCEEDED
    assert status.steps[0].attempts == 2


async def test_cancel_stops_running_steps_and_ends_cancelled(tmp_path: Path) -> None:
    started = tmp_path / "started"
    source = f"touch {started}; exec sleep 600"
    cancel = asyncio.Event()
    updates: list[JobStatus] = []
    steps = [{"name": "long", "script": {"language": "shell", "source": source}}]
    task = asyncio.create_task(run_local(job(steps), on_update=updates.append, cancel=cancel))
    async with asyncio.timeout(60):
        while not started.exists():  # noqa: ASYNC110 - a file another process writes
            await asyncio.sleep(0.02)
        cancel.set()
        status = await task
    assert status.phase is JobPhase.CANCELLED
    assert status.steps[0].phase is StepPhase.CANCELLED
    assert updates and updates[-1] == status


async def test_the_loop_sleeps_until_the_next_event(tmp_path: Path) -> None:
    # A 0.4 s backoff with nothing running: one pass before the wait, one after.
    # A loop that polled on a fixed period would plan many more times.
    source = 'test "$KWF_ATTEMPT" = 2'
    retry = {"limit": 1, "backoff": {"seconds": 0.4}}
    updates: list[JobStatus] = []
    status = await run_local(
        job([{"name": "s", "retry": retry, "script": {"language": "shell", "source": source}}]),
        on_update=updates.append,
    )
    assert status.phase is JobPhase.SUCCEEDED
    assert len(updates) <= 8


def test_params_and_state_overrides_lie_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "apiVersion: workflow.kwf.dev/v1alpha1\nkind: Job\nmetadata: {name: r}\n"
        "spec:\n  params: {a: 1, b: 2}\n  initialState: {x: 1}\n"
        "  steps: [{name: s, script: {source: x}}]\n"
    )
    run = load_run(path, {"b": 3, "c": [1]}, {"y": True})
    assert run.job.spec.params == {"a": 1, "b": 3, "c": [1]}
    assert run.job.spec.initial_state == {"x": 1, "y": True}


def test_workflow_ref_is_found_in_a_sibling_file(tmp_path: Path) -> None:
    (tmp_path / "wf.yaml").write_text(
        "apiVersion: workflow.kwf.dev/v1alpha1\nkind: Workflow\nmetadata: {name: w}\n"
        "spec:\n  params: {a: 1}\n  parallelism: 3\n  steps: [{name: s, script: {source: x}}]\n"
    )
    (tmp_path / "run.yaml").write_text(
        "apiVersion: workflow.kwf.dev/v1alpha1\nkind: Job\nmetadata: {name: r}\n"
        "spec: {workflowRef: {name: w}, params: {b: 2}}\n"
    )
    run = load_run(tmp_path / "run.yaml")
    assert run.workflow == "w"
    assert [s.name for s in run.job.spec.steps or ()] == ["s"]
    assert run.job.spec.params == {"a": 1, "b": 2}
    assert run.job.spec.parallelism == 3
    assert run.job.spec.workflow_ref is None


def test_missing_workflow_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "run.yaml").write_text(
        "apiVersion: workflow.kwf.dev/v1alpha1\nkind: Job\nmetadata: {name: r}\n"
        "spec: {workflowRef: {name: nowhere}}\n"
    )
    with pytest.raises(SourceError, match=r"spec\.workflowRef\.name: no Workflow 'nowhere'"):
        load_run(tmp_path / "run.yaml")
