"""The time of one plan() pass over large runs: ``python -m bench.plan [--smoke]``.

plan() runs on every event of a run, so one pass over a 1,000-step run with
half its steps running has to stay well under the time of a step's own
orchestration. Each DAG is layered: a step depends on up to three steps of
the layer before it. Half the steps have succeeded, the other half run.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

from kwf.api import JobSpec, JobStatus, Step
from kwf.engine.plan import plan
from kwf.engine.types import Attempt, AttemptPhase, Launch, Result

TARGET_MS = 20.0  # for the 1,000-step pass
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def dag(size: int, seed: int = 7) -> JobSpec:
    """The first half in ten layers, each step after up to three of the layer
    before; the second half after up to three steps of the first half."""
    rng = random.Random(seed)
    half = size // 2
    width = max(half // 10, 1)
    steps = []
    for index in range(size):
        if index < half:
            layer = index // width
            before = list(range((layer - 1) * width, layer * width)) if layer else []
        else:
            before = list(range(half - width, half))
        after = sorted(rng.sample(before, min(3, len(before))))
        step = {
            "name": f"s{index}",
            "dependsOn": [f"s{i}" for i in after],
            "script": {"source": "echo $GREETING"},
            "env": [{"name": "GREETING", "value": "{{ params.greeting }}"}],
        }
        if index % 10 == 0:
            step["when"] = "params.n > 0"
        steps.append(Step.model_validate(step))
    # past the 1,000 steps a Job may hold: plan() itself has no such limit
    spec = JobSpec.model_validate({"steps": steps[:1], "params": {"greeting": "hi", "n": 1}})
    return spec.model_copy(update={"steps": steps})


def half_running(spec: JobSpec) -> tuple[JobStatus, dict[str, list[Attempt]]]:
    """Drive the run until the first half has succeeded and the second half runs."""
    status = JobStatus()
    observed: dict[str, list[Attempt]] = {}
    size = len(spec.steps or ())
    now = T0
    while sum(1 for s in status.steps if s.phase == "Running") < size - size // 2:
        for name, attempts in observed.items():
            if attempts[0].phase is AttemptPhase.RUNNING:
                observed[name] = [
                    Attempt(name, 1, AttemptPhase.SUCCEEDED, now, now, result=Result(output=name))
                ]
        result = plan(spec, status, observed, now)
        status = result.status
        for action in result.actions:
            if isinstance(action, Launch):
                observed[action.step.name] = [
                    Attempt(action.step.name, action.number, AttemptPhase.RUNNING, now)
                ]
        now += timedelta(seconds=1)
    return status, observed


def measure(size: int, repeat: int) -> tuple[float, float, int]:
    spec = dag(size)
    status, observed = half_running(spec)
    now = T0 + timedelta(hours=1)
    running = sum(1 for s in status.steps if s.phase == "Running")
    plan(spec, status, observed, now)  # caches warm, as in the operator
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = plan(spec, status, observed, now)
        times.append(time.perf_counter() - started)
    assert not [a for a in result.actions if isinstance(a, Launch)], "a pass launched again"
    return statistics.median(times) * 1000, min(times) * 1000, running


SIZES = ((100, 50), (1000, 20), (5000, 5))
SMOKE = ((100, 3),)  # make test: the bench still runs; its figures are not worth reading


def main(argv: list[str] | None = None) -> int:
    smoke = "--smoke" in (argv if argv is not None else sys.argv[1:])
    print("one plan() pass, half the steps running (median, best: the best is the figure on a busy machine)")
    for size, repeat in SMOKE if smoke else SIZES:
        median, best, running = measure(size, repeat)
        line = f"{size:>5} steps ({running} running): {median:8.2f} ms, best {best:8.2f} ms"
        if size == 1000:
            ratios = f"ratio {median / TARGET_MS:.2f} (best {best / TARGET_MS:.2f})"
            line += f"   target {TARGET_MS:.0f} ms, {ratios}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
