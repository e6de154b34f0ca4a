"""Properties of plan() over random DAGs, driven by an executor that finishes attempts in random order."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kwf.api import JobSpec, JobStatus
from kwf.engine.plan import plan
from kwf.engine.state import merge_all, merge_patch
from kwf.engine.types import Attempt, AttemptPhase, Launch, Result, Stop
from tests.unit.engine.plan_builders import T0


@st.composite
def runs(draw: st.DrawFn) -> tuple[JobSpec, list[int]]:
    size = draw(st.integers(1, 12))
    steps = []
    for index in range(size):
        after = draw(st.sets(st.integers(0, index - 1), max_size=3)) if index else set()
        step = {"name": f"s{index}", "dependsOn": [f"s{i}" for i in sorted(after)], "script": {"source": "x"}}
        if draw(st.booleans()):
            step["retry"] = {"limit": 1, "backoff": {"seconds": 0}}
        steps.append(step)
    parallelism = draw(st.none() | st.integers(1, 4))
    spec = JobSpec.model_validate({"steps": steps, "parallelism": parallelism})
    choices = draw(st.lists(st.integers(0, 1000), min_size=200, max_size=200))
    return spec, choices


PATCHES = st.dictionaries(
    st.sampled_from("abc"),
    st.none() | st.integers() | st.dictionaries(st.sampled_from("xy"), st.none() | st.integers(), max_size=2),
    max_size=3,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs())
def test_random_dags_run_in_order_to_the_end(run: tuple[JobSpec, list[int]]) -> None:
    spec, choices = run
    after = {s.name: set(s.depends_on) for s in spec.steps or ()}
    status, observed = JobStatus(), {}
    now, done, merged = T0, set(), []
    for choice in choices:
        result = plan(spec, status, observed, now)
        # idempotence: the same observations launch nothing new
        again = plan(spec, result.status, observed, now)
        assert not [a for a in again.actions if isinstance(a, Launch)]
        # a restart from the written status launches nothing and merges nothing again
        assert again.status.shared_state == result.status.shared_state
        status = result.status
        for action in result.actions:
            if isinstance(action, Launch):
                assert after[action.step.name] <= done, f"{action.step.name} started before its dependencies"
                observed.setdefault(action.step.name, []).append(
                    Attempt(action.step.name, action.number, AttemptPhase.RUNNING, started_at=now)
                )
            assert not isinstance(action, Stop)
        if status.phase.finished:
            break
        running = [
            (n, i) for n, attempts in observed.items() for i, a in enumerate(attempts) if a.phase == "Running"
        ]
        assert running or status.steps, "a run with nothing running must have something waiting"
        if not running:
            now += timedelta(seconds=1)
            continue
        name, index = running[choice % len(running)]
        now += timedelta(seconds=1)
        fails = choice % 5 == 0
        attempt = observed[name][index]
        if fails:
            observed[name][index] = dataclasses.replace(attempt, phase=AttemptPhase.FAILED, finished_at=now)
        else:
            patch = {name: attempt.number}
            merged.append(patch)
            observed[name][index] = dataclasses.replace(
                attempt, phase=AttemptPhase.SUCCEEDED, finished_at=now, result=Result(output=1, state=patch)
            )
            done.add(name)
    assert status.phase.finished, "the run did not end"
    assert status.shared_state == merge_all({}, merged)
    if status.phase == "Succeeded":
        assert done == set(after)


@given(st.lists(PATCHES, max_size=6), PATCHES)
def test_merging_in_order_equals_patches_one_by_one(
    patches: list[dict[str, object]], start: dict[str, object]
) -> None:
    one_by_one: object = start
    for patch in patches:
        one_by_one = merge_patch(one_by_one, patch)
    assert merge_all(start, patches) == one_by_one


@settings(max_examples=40, deadline=None)
@given(st.lists(PATCHES, min_size=1, max_size=5), st.permutations(range(5)))
def test_a_restart_never_applies_a_merge_twice(patches: list[dict[str, object]], order: list[int]) -> None:
    names = [f"s{i}" for i in range(len(patches))]
    spec = JobSpec.model_validate({"steps": [{"name": n, "script": {"source": "x"}} for n in names]})
    first = plan(spec, JobStatus(), {}, T0)
    observed = {
        name: [
            Attempt(
                name,
                1,
                AttemptPhase.SUCCEEDED,
                started_at=T0,
                finished_at=T0 + timedelta(seconds=order[i]),
                result=Result(state=patches[i]),
            )
        ]
        for i, name in enumerate(names)
    }
    written = plan(spec, first.status, observed, T0 + timedelta(seconds=9)).status
    expected = merge_all(
        {}, [patches[i] for i in sorted(range(len(names)), key=lambda i: (order[i], names[i]))]
    )
    assert written.shared_state == expected
    restarted = plan(spec, JobStatus.model_validate(written.dump()), observed, T0 + timedelta(seconds=20))
    assert restarted.actions == ()
    assert restarted.status.shared_state == expected
