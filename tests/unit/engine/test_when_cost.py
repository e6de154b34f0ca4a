"""The cost of ``when``: bounded before it runs, at check time and at evaluation."""

from __future__ import annotations

import time

import cel as library
import pytest

from kwf.api import JobPhase, StepPhase
from kwf.engine import cel, cel_cost
from kwf.engine.cel import WhenError

from .plan_builders import Run, job, step

LITERAL = "[0,1,2,3,4,5,6,7,8,9]"
#: Ten nested loops over ten literals: 10**10 iterations, about an hour.
LITERAL_BOMB = "".join(f"{LITERAL}.all(x{i}, " for i in range(10)) + "true" + ")" * 10
#: The finding: 61 characters, three nested macros over a param; seconds at 100 items.
PARAM_BOMB = "params.l.exists(a,params.l.exists(b,params.l.exists(c,c<0)))"
#: Fine at check time, over the limit with a list of 1,000 items at evaluation.
QUADRATIC = "params.l.all(a, params.l.all(b, a + b >= 0))"


def quick(seconds: float = 0.5) -> _Timer:
    return _Timer(seconds)


class _Timer:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *_: object) -> None:
        took = time.perf_counter() - self.started
        assert took < self.seconds, f"took {took:.3f}s"


@pytest.mark.parametrize("expression", [LITERAL_BOMB, PARAM_BOMB])
def test_a_bomb_is_refused_at_check_time(expression: str) -> None:
    with quick():
        why = cel.check(expression)
    assert why is not None
    assert "over the limit of 500,000" in why
    assert "even with small params, state and steps" in why


def test_a_bomb_in_a_run_is_never_evaluated() -> None:
    run = Run(job(step("a", when=PARAM_BOMB), params={"l": list(range(100))}))
    with quick():
        run.plan()
    assert run.status.message is not None and "step a: when:" in run.status.message
    assert run.launched == []


def test_over_the_limit_with_the_values_at_hand_it_is_cut() -> None:
    assert cel.check(QUADRATIC) is None
    assert cel.evaluate("s", QUADRATIC, {"params": {"l": list(range(30))}}) is True
    with quick(), pytest.raises(WhenError) as error:
        cel.evaluate("s", QUADRATIC, {"params": {"l": list(range(1000))}})
    assert str(error.value).startswith(f"step s: when {QUADRATIC!r} would cost about ")
    assert "over the limit of 500,000 (it reads params about 1,003 values)" in str(error.value)


def test_a_step_over_the_limit_fails_once_and_is_not_evaluated_again() -> None:
    run = Run(job(step("a", when=QUADRATIC), step("b", "a"), params={"l": list(range(1000))}))
    with quick():
        run.plan()
    assert run.phases() == {"a": StepPhase.FAILED, "b": StepPhase.CANCELLED}
    assert run.status.phase is JobPhase.FAILED
    assert "when" in (run.step("a").message or "") and "over the limit" in (run.step("a").message or "")
    entry = run.step("a")
    # After a restart the status is all there is; with cheap values now, a new
    # evaluation would launch the step: it stays as it was recorded.
    run.spec = run.spec.model_copy(update={"params": {"l": [1]}})
    run.tick(60)
    run.plan()
    assert run.step("a") == entry
    assert run.launched == []


def test_only_the_parts_read_are_converted() -> None:
    # 30,000 nodes in the state: converting it all takes tens of milliseconds
    big = {"counter": 3, "items": [{"id": str(i), "tags": ["a", "b"]} for i in range(6000)]}
    expression = "state.counter < 10 && has(state.items)"
    context = cel._context("s", expression, frozenset({"state"}), {"state": big}.__getitem__, cel.LIMIT)
    assert context == {"state": {"counter": 3, "items": None}}
    assert cel.evaluate("s", expression, {"state": big}) is True
    with quick(), pytest.raises(WhenError, match="state is too large to evaluate it on"):
        cel.evaluate("s", "size(state) > 1", {"state": big})


@pytest.mark.parametrize(
    "expression",
    [
        "state.counter < 10",
        "params.n > 2 ? state.a == 'x' : !(state.b in [1, 2, 3])",
        "steps.fetch.phase == 'Succeeded' && has(state.counter)",
        "[1, 2, 3].exists(x, x == params.n)",
        "{'a': 1, 'b': params.n}['b'] == 2",
        "state['user'].name.startsWith(\"a\") || r'raw\\d' != '''x'''",
        "params.tags.map(t, t + '!').filter(t, size(t) > 1).size() == 2",
        "double(params.n) / 2.0 >= 1.0e0 && 0x10 > 3u * 2u - -1 % 2",
        "// a comment\nparams.n == 2",
        "params.tags.all(t, t.matches('^[a-z]+$'))",
        "int(params.n) + state.counter.size() == 0 || true",
        "b'abc' == bytes('abc')",
        "timestamp('2030-01-01T00:00:00Z') < timestamp('2031-01-01T00:00:00Z')",
    ],
)
def test_pruned_values_give_the_same_answer(expression: str) -> None:
    data = {
        "params": {"n": 2, "tags": ["a", "b"], "other": list(range(50))},
        "state": {"counter": 5, "a": "x", "b": 4, "user": {"name": "ann", "age": 3}},
        "steps": {"fetch": {"phase": "Succeeded", "output": [1, 2]}, "other": {"phase": "Pending"}},
    }
    assert cel.check(expression) is None
    try:
        expected: object = library.evaluate(expression, data)
    except (TypeError, ValueError, RuntimeError, KeyError) as error:
        expected = type(error)
    try:
        got: object = cel.evaluate("s", expression, data)
    except WhenError:
        got = "error"
    assert got == expected or (got == "error" and isinstance(expected, type))


def test_regular_expressions_are_costed_and_literal() -> None:
    assert cel.check("params.s.matches('^[a-z]+$')") is None
    assert "over the limit" in (cel.check(r"params.s.matches('(\\w{100}){100}')") or "")
    assert "its pattern as a string literal" in (cel.check("params.s.matches(params.p)") or "")


def test_sizes_of_values() -> None:
    size = cel_cost.measure({"a": [1, 2, 3], "b": "x" * 600}, cap=10_000)
    assert size.count == 2
    assert size.inner().count == 600  # the longest item: the string
    assert size.weight == 1 + 2 * 1 + (1 + 3) + (1 + 600 // 256)  # keys, list, string
    with pytest.raises(cel_cost.TooLarge):
        cel_cost.measure(list(range(100)), cap=50)
