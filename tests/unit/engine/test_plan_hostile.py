"""Random and hostile specs and step results through plan(): nothing escapes, the status stays bounded."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pydantic
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kwf.api import JobSpec, JobStatus
from kwf.engine.cel_cost import LIMIT
from kwf.engine.plan import plan
from kwf.engine.types import Attempt, AttemptPhase, Launch, Limits, Result
from tests.unit.engine.plan_builders import T0

from .test_when_cost import LITERAL_BOMB, PARAM_BOMB, QUADRATIC

LIMITS = Limits(status_bytes=96 * 1024, state_bytes=16 * 1024, output_bytes=4 * 1024, max_added_steps=8)
NAMES = [f"s{i}" for i in range(8)]

#: Mostly expressions that check; a few that never can (the run then stalls on its spec).
WHENS = st.sampled_from(
    [
        None,
        None,
        "true",
        "state.n > 1",
        "params.l.exists(x, x == 3)",
        QUADRATIC,
        QUADRATIC,
        "state.missing.x",
        "params.l.map(x, x)",
        "size(state) > 0",
        "size(state) > 0",
        "steps.s0.output == 'x'",
        "has(state.big) && state.big.size() > 3",
    ]
)
NEVER = st.sampled_from([PARAM_BOMB, LITERAL_BOMB, "(((", "params.s.matches('(a{50}){50}')"])
TEXTS = st.sampled_from(
    [
        "plain",
        "{{ state.big }}" * 40,
        "{{ params.s }}",
        "{{ steps.s0.output }}",
        "{{ state.n }}-{{ params.l }}",
        "é" * 300,
    ]
)
URLS = st.sampled_from(
    [
        "https://x.test/{{ params.s }}",
        "https://x.test/{{ steps.s0.output }}/{{ state.n }}",
        "https://x.test/?q={{ state.big }}",
        "http://127.0.0.1:8080/v1",
    ]
)
NEVER_URLS = st.sampled_from(["{{ params.s }}/x", "https://{{ state.n }}/"])


def json_values(depth: int = 3) -> st.SearchStrategy[Any]:
    leaves = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
        max_leaves=12,
    )


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"k": value}
    return value


OUTPUTS = st.one_of(
    json_values(),
    st.sampled_from(["x" * 40_000, deep(500), [deep(70)], {"k": "é" * 9000}, list(range(3000))]),
)
PATCHES = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(["n", "big", "x"]), json_values(), max_size=3),
    st.sampled_from([{"big": "b" * 20_000}, {"n": 2}, deep(200), {"x": None}]),
    json_values(),  # wrong types too
)


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    steps = []
    broken = draw(st.integers(0, 9)) == 0
    urls = URLS | NEVER_URLS if broken else URLS
    whens = WHENS | NEVER if broken else WHENS
    for index in range(draw(st.integers(1, len(NAMES)))):
        kind = draw(st.sampled_from(["script", "container", "http", "llm"]))
        body: dict[str, Any] = {
            "script": {"source": "x"},
            "container": {"image": "i", "args": [draw(TEXTS)]},
            "http": {"url": draw(urls), "body": draw(TEXTS)},
            "llm": {"model": "m", "prompt": draw(TEXTS), "baseURL": draw(urls)},
        }[kind]
        step: dict[str, Any] = {
            "name": NAMES[index],
            "dependsOn": sorted(draw(st.sets(st.sampled_from(NAMES[:index]), max_size=2))) if index else [],
            kind: body,
            "env": [{"name": "E", "value": draw(TEXTS)}],
        }
        when = draw(whens)
        if when is not None:
            step["when"] = when
        if draw(st.integers(0, 3)) == 0:
            step["onFailure"] = f"h{index}"
            steps.append({"name": f"h{index}", "script": {"source": "x"}})
        if draw(st.booleans()):
            step["saveAs"] = draw(st.sampled_from(["out", "a.b", "n"]))
        if draw(st.booleans()):
            step["retry"] = {"limit": 1, "backoff": {"seconds": 0}}
        steps.append(step)
    return {
        "steps": steps,
        "params": {"l": list(range(draw(st.sampled_from([3, 1000])))), "s": draw(TEXTS)},
        "initialState": {"n": 1, "big": "b" * draw(st.sampled_from([10, 10_000]))},
    }


@st.composite
def results(draw: st.DrawFn) -> dict[str, Any]:
    """What a step sends back, before the executor parses it."""
    data: dict[str, Any] = {"output": draw(OUTPUTS)}
    patch = draw(PATCHES)
    if patch is not None:
        data["state"] = patch
    if draw(st.integers(0, 4)) == 0:
        count = draw(st.sampled_from([1, 3, 20]))
        data["steps"] = [
            draw(
                st.sampled_from(
                    [
                        {"name": f"n{draw(st.integers(0, 30))}", "script": {"source": "x"}},
                        {"name": "s0", "script": {"source": "x"}},
                        {"name": "bad name!", "script": {"source": "x"}},
                        {"name": "e", "executor": "inline", "script": {"source": "x"}},
                        "not a step",
                    ]
                )
            )
            for _ in range(count)
        ]
    if draw(st.integers(0, 5)) == 0:
        data["usage"] = draw(
            st.sampled_from([{"m": {"totalTokens": 5}}, {"m": 5}, [], {"m": {"totalTokens": -1}}])
        )
    if draw(st.integers(0, 8)) == 0:
        data["extra"] = 1
    return data


def status_size(status: JobStatus) -> int:
    return len(json.dumps(status.dump(), separators=(",", ":"), ensure_ascii=False).encode())


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(specs(), st.data())
def test_hostile_runs_end_bounded_and_explained(data: dict[str, Any], draw: st.DataObject) -> None:
    try:
        spec = JobSpec.model_validate(data)
    except pydantic.ValidationError as error:
        assert all(item["loc"] for item in error.errors())  # a refusal names its field
        event("refused by the models")
        return
    status, observed, now = JobStatus(), {}, T0
    for passes in range(60):
        decision = plan(spec, status, observed, now, LIMITS, generation=1, job="j", namespace="n")
        status = decision.status
        assert status_size(status) <= LIMITS.status_bytes
        if status.phase.finished:
            break
        if any(c.type == "Stalled" and c.status == "True" for c in status.conditions):
            # a spec that can never run waits, Stalled, for an edit: it names the step
            assert status.message is not None and status.message.startswith("step ")
            assert not decision.actions
            event("stalled: " + status.message.split(":")[1][:40])
            return
        for action in decision.actions:
            if isinstance(action, Launch):
                observed[action.step.name] = [
                    Attempt(action.step.name, action.number, AttemptPhase.RUNNING, now)
                ]
        now += timedelta(seconds=1)
        for name, attempts in list(observed.items()):
            current = attempts[-1]
            if current.phase.finished:
                continue
            phases = list(AttemptPhase) if passes < 10 else [p for p in AttemptPhase if p.finished]
            phase = draw.draw(st.sampled_from(phases))
            result = None
            message = None
            if phase is AttemptPhase.SUCCEEDED:
                try:
                    result = Result.from_json(draw.draw(results()))
                except ValueError as error:
                    assert "result" in str(error)  # names what is wrong in it
                    phase, message = AttemptPhase.FAILED, str(error)
            elif phase is not AttemptPhase.RUNNING:
                message = draw.draw(st.sampled_from(["boom", "é" * 3000, ""]))
            observed[name] = [Attempt(name, current.number, phase, current.started_at, now, result, message)]
    else:
        raise AssertionError(f"the run did not end: {status.phase} {status.message}")
    event(f"ended {status.phase.value}")
    if status.phase.value == "Failed":
        assert status.message, "a failed run says why"
        assert status.message.startswith(("step ", "the run passed")) or "step" in status.message
    for entry in status.steps:
        if entry.phase.value == "Failed":
            assert entry.message, f"step {entry.name} failed without a message"
    assert LIMIT  # the cost limit stays the one checked above
