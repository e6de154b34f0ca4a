"""Every CEL rule of the CRDs has a Python twin in the models: on a corpus of bad
objects, the API server's rule and the models refuse the same thing, at the
same field, with the same message; on a good one, both accept it.

A rule added to the CRD without a case here fails the first test."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pydantic
import pytest

from kwf.api import Step
from kwf.engine.validation import Problem, problems
from tests.unit.api.admission import holds, rules

Node = Any

KIND = {"jobs": "Job", "workflows": "Workflow"}


def script(**fields: Any) -> dict[str, Any]:
    return {"name": "a", "executor": "pod", "script": {"source": "print(1)"}, **fields}


# where a rule sits -> (the field a refusal names, the spec that holds such a node)
PLACES: dict[str, tuple[str, Callable[[Node], dict[str, Any]]]] = {
    "spec": ("spec", lambda node: node),
    "spec.steps[]": ("spec.steps[0]", lambda node: {"steps": [node]}),
    "spec.steps[].llm": ("spec.steps[0].llm", lambda node: {"steps": [{"name": "a", "llm": node}]}),
    "spec.steps[].env[]": ("spec.steps[0].env[0]", lambda node: {"steps": [script(env=[node])]}),
    "spec.steps[].script.source": (
        "spec.steps[0].script.source",
        lambda node: {"steps": [{"name": "a", "script": {"source": node}}]},
    ),
}

# (where, rule) -> (bad nodes, a good node)
CORPUS: dict[tuple[str, str], tuple[list[Node], Node]] = {
    ("spec", "has(self.workflowRef) != has(self.steps)"): (
        [{"workflowRef": {"name": "flow"}, "steps": [script()]}, {"params": {"a": 1}}],
        {"workflowRef": {"name": "flow"}},
    ),
    (
        "spec.steps[]",
        "[has(self.script), has(self.container), has(self.http), has(self.llm)].filter(x, x).size() == 1",
    ): (
        [
            {"name": "a", "executor": "pod"},
            script(container={"image": "busybox"}),
            script(http={"url": "http://x.test"}, llm={"model": "m", "prompt": "p"}),
        ],
        {"name": "a", "executor": "pod", "container": {"image": "busybox"}},
    ),
    ("spec.steps[]", "self.executor != 'inline' || has(self.http) || has(self.llm)"): (
        [
            script(executor="inline"),
            {"name": "a", "executor": "inline", "container": {"image": "busybox"}},
        ],
        {"name": "a", "executor": "inline", "http": {"url": "http://x.test"}},
    ),
    ("spec.steps[].llm", "has(self.prompt) != has(self.messages)"): (
        [
            {"model": "m"},
            {"model": "m", "prompt": "p", "messages": [{"role": "user", "content": "c"}]},
        ],
        {"model": "m", "messages": [{"role": "user", "content": "c"}]},
    ),
    ("spec.steps[].env[]", "has(self.value) != has(self.secretKeyRef)"): (
        [{"name": "A"}, {"name": "A", "value": "1", "secretKeyRef": {"name": "s", "key": "k"}}],
        {"name": "A", "secretKeyRef": {"name": "s", "key": "k"}},
    ),
    ("spec.steps[].script.source", "!self.contains('{{')"): (
        [
            'echo "{{ params.who }}"',
            "import os\nprint('{{state.x}}')",
            'print(f"{{x}}")',  # not a lookup, refused too: see NO_TEMPLATE_IN_CODE
            "docker inspect --format '{{.State.Status}}' x",
        ],
        'import json, os\nprint(json.load(open(os.environ["KWF_PARAMS"]))["who"])  # { {',
    ),
}


def document(plural: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": KIND[plural],
        "metadata": {"name": "t"},
        "spec": spec,
    }


CASES = [(plural, where, rule) for plural in KIND for where, rule in rules(plural)]


def test_every_rule_of_the_crds_has_a_case_in_the_corpus() -> None:
    found = {(where, rule["rule"]) for plural in KIND for where, rule in rules(plural)}
    missing = found - set(CORPUS)
    assert not missing, (
        f"CEL rules without a twin case (add one here, and the rule to the model's RULES): {missing}"
    )
    assert set(CORPUS) == found, "cases for rules the CRDs no longer have"
    assert len(found) >= 6


@pytest.mark.parametrize(
    ("plural", "where", "rule"), CASES, ids=[f"{p}:{w}:{r['rule'][:30]}" for p, w, r in CASES]
)
def test_the_rule_and_its_twin_refuse_the_same_objects(plural: str, where: str, rule: dict[str, str]) -> None:
    field, wrap = PLACES[where]
    bad_nodes, good = CORPUS[(where, rule["rule"])]
    for bad in bad_nodes:
        assert not holds(rule["rule"], bad), f"the API server would accept {bad!r}"
        found = problems(document(plural, wrap(bad)))
        assert Problem(field, rule["message"]) in found, found
    assert holds(rule["rule"], good)
    assert problems(document(plural, wrap(good))) == []


def test_the_twins_hold_for_a_step_alone_as_steps_return_them() -> None:
    # kwf.engine.results parses the steps a step returns with Step, not a whole Job
    with pytest.raises(pydantic.ValidationError) as error:
        Step.model_validate({"name": "x", "executor": "inline", "script": {"source": "import os"}})
    (only,) = error.value.errors()
    assert only["msg"] == "executor inline is only for http and llm steps"
    with pytest.raises(pydantic.ValidationError) as error:
        Step.model_validate({"name": "x", "script": {"source": "echo {{ state.big }}"}})
    (only,) = error.value.errors()
    assert only["loc"] == ("script", "source")
    assert "$KWF_PARAMS" in only["msg"] and "$KWF_STATE" in only["msg"]
