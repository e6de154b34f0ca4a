"""The graph checks: each problem found, named so a user can fix it."""

from __future__ import annotations

from typing import Any

import pytest

from kwf.api import Step
from kwf.engine import graph


def step(name: str, *after: str, **fields: Any) -> Step:
    return Step.model_validate({"name": name, "dependsOn": list(after), "script": {"source": "x"}, **fields})


def test_a_sound_graph_has_no_problems() -> None:
    steps = (step("a"), step("b", "a"), step("c", "a", "b", when="state.x > 1"))
    assert graph.problems(steps) == []


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ((step("a", "b"), step("b", "a")), "cycle: a -> b -> a"),
        ((step("a", "a"),), "cycle: a -> a"),
        ((step("a", "c"), step("b", "a"), step("c", "b")), "cycle: a -> b -> c -> a"),
        ((step("a"), step("b", "x")), "step b: dependsOn names unknown step 'x'"),
        ((step("a", onFailure="nope"),), "step a: onFailure names unknown step 'nope'"),
        ((step("a", onFailure="a"),), "step a: onFailure names the step itself"),
        ((step("a"), step("a")), "duplicate step name 'a'"),
        (
            (step("a", onFailure="h"), step("b", onFailure="h"), step("h")),
            "step h is the onFailure of both a and b",
        ),
        (
            (step("a", onFailure="h"), step("h", "a")),
            "step h: it handles a's failure, so it cannot wait for a",
        ),
    ],
)
def test_each_problem_is_named(steps: tuple[Step, ...], problem: str) -> None:
    assert problem in graph.problems(steps)


def test_a_when_that_does_not_parse_names_step_field_and_expression() -> None:
    (problem,) = graph.problems((step("count", when="state.n <"),))
    assert problem.startswith("step count: when: expression 'state.n <' does not parse: 1:")


def test_a_when_reading_other_names_is_refused() -> None:
    (problem,) = graph.problems((step("count", when="env.HOME == ''"),))
    assert "reads env; it may read only params, state and steps" in problem


def test_a_template_that_does_not_parse_names_step_field_and_text() -> None:
    bad = Step.model_validate({"name": "fetch", "http": {"url": "https://x.test/{{ parms.repo }}"}})
    (problem,) = graph.problems((bad,))
    assert problem.startswith("step fetch: http.url: '{{ parms.repo }}'")
    assert "not 'parms'" in problem


def test_template_problems_name_list_items() -> None:
    bad = Step.model_validate(
        {"name": "ask", "llm": {"model": "m", "messages": [{"role": "user", "content": "{{ steps.a }}"}]}}
    )
    (problem,) = graph.problems((bad,))
    assert problem.startswith("step ask: llm.messages[0].content: '{{ steps.a }}'")


def test_structure_fields_are_not_templates() -> None:
    # `when` is CEL, not a template: braces there are CEL's business.
    ok = step("a", when="{'k': 1}.k == 1")
    assert graph.problems((ok,)) == []


def test_problems_are_kept_per_steps_tuple() -> None:
    steps = (step("a"), step("b", "zz"))
    assert graph.problems(steps) is graph.problems(steps)
    assert graph.problems(tuple(steps)) is graph.problems(steps)


def test_topological_order_keeps_spec_order_between_independent_steps() -> None:
    steps = [step("d", "c"), step("c"), step("b"), step("a", "b")]
    assert graph.topological_order(tuple(steps)) == ("c", "d", "b", "a")


def test_a_handler_comes_after_its_primary() -> None:
    steps = [step("h"), step("a", onFailure="h")]
    assert graph.topological_order(tuple(steps)) == ("a", "h")


def test_topological_order_leaves_out_a_cycle() -> None:
    steps = [step("a", "b"), step("b", "a"), step("c")]
    assert graph.topological_order(tuple(steps)) == ("c",)


def test_downstream_follows_dependents_and_handlers() -> None:
    steps = [step("a", onFailure="h"), step("b", "a"), step("c", "b"), step("h"), step("x")]
    assert graph.downstream(steps, ["a"]) == {"a", "b", "c", "h"}


def test_a_long_chain_has_no_recursion_limit() -> None:
    steps = [step("s0")] + [step(f"s{i}", f"s{i - 1}") for i in range(1, 3000)]
    assert graph.problems(tuple(steps)) == []
    assert graph.topological_order(tuple(steps))[-1] == "s2999"
