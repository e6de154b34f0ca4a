"""One validation for every path: what admission refuses, steps returned by a step,
Workflow snapshots, local runs, ``kwf lint`` and ``kwf submit`` refuse too, each
naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydantic
import pytest

from kwf.api import JobSpec, Step
from kwf.clusterctl.connect import CliError
from kwf.clusterctl.submit import plan_submission
from kwf.engine.results import SettleError, returned_steps
from kwf.engine.validation import Problem, problems
from kwf.local.lint import lint_file
from kwf.local.source import SourceError, load_run

TRAVERSAL = "../../kube-system/secrets/x"
DEEP_32 = json.loads("[" * 32 + "]" * 32)  # inside a body object: 33 deep


def job(*steps: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": "Job",
        "metadata": {"name": "t"},
        "spec": {"steps": list(steps), **spec},
    }


def llm(name: str, secret: str) -> dict[str, Any]:
    return {
        "name": name,
        "executor": "inline",
        "llm": {"model": "m", "prompt": "p", "apiKeySecretRef": {"name": secret, "key": "api-key"}},
    }


BAD = job(
    {"name": "gen", "script": {"source": "echo {{ state.big }}"}},
    llm("ask", TRAVERSAL),
    {"name": "run", "executor": "inline", "script": {"source": "import os"}},
    {
        "name": "env",
        "script": {"source": "x"},
        "env": [{"name": "T", "secretKeyRef": {"name": "s", "key": "..k"}}],
    },
    params={"deep": json.loads("[" * 250 + "]" * 250)},
    workflowRef={"name": "Flow/../x"},
)
EXPECTED = {
    "spec.steps[0].script.source",
    "spec.steps[1].llm.apiKeySecretRef.name",
    "spec.steps[2]",
    "spec.steps[3].env[0].secretKeyRef.key",
    "spec.params",
    "spec.workflowRef.name",
}


def test_validation_names_every_field_at_once() -> None:
    found = problems(BAD)
    assert {problem.field for problem in found} == EXPECTED
    by_field = {problem.field: problem.message for problem in found}
    assert "$KWF_PARAMS" in by_field["spec.steps[0].script.source"]
    assert by_field["spec.steps[2]"] == "executor inline is only for http and llm steps"
    assert by_field["spec.params"] == "nested 251 deep, at most 32"
    assert "should match pattern" in by_field["spec.steps[1].llm.apiKeySecretRef.name"]


def test_lint_submit_and_local_runs_refuse_the_same(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(BAD))  # JSON is YAML
    assert {problem.path for problem in lint_file(path)} == EXPECTED
    with pytest.raises(CliError) as refused:
        plan_submission(path, {}, start_run=False, namespace="ns")
    assert all(field in str(refused.value) for field in EXPECTED)
    with pytest.raises(SourceError) as local:
        load_run(path)
    assert "spec.steps[2]: executor inline is only for http and llm steps" in str(local.value)


@pytest.mark.parametrize("kind", ["Job", "Workflow"])
def test_a_local_run_counts_params_from_the_command_line_against_the_bound(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps({**job({"name": "a", "script": {"source": "x"}}), "kind": kind}))
    assert load_run(path, {"small": "x"}).job.spec.params == {"small": "x"}
    with pytest.raises(SourceError, match=r"spec\.params: 68\.4 KiB as JSON, at most 64 KiB"):
        load_run(path, {"big": "x" * 70_000})


def test_submit_refuses_what_only_the_graph_shows_and_params_over_the_bound(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(job({"name": "a", "dependsOn": ["ghost"], "script": {"source": "x"}})))
    with pytest.raises(CliError, match=r"spec\.steps\[0\]\.dependsOn: dependsOn names unknown step 'ghost'"):
        plan_submission(path, {}, start_run=False, namespace="ns")
    path.write_text(json.dumps(job({"name": "a", "script": {"source": "x"}})))
    with pytest.raises(CliError, match=r"spec\.params: .* as JSON, at most 64 KiB"):
        plan_submission(path, {"big": "x" * 70_000}, start_run=False, namespace="ns")


@pytest.mark.parametrize(
    ("step", "words"),
    [
        (
            {"name": "x", "executor": "inline", "script": {"source": "id"}},
            "executor inline is only for http and llm steps",
        ),
        (llm("x", TRAVERSAL), "llm.apiKeySecretRef.name: String should match pattern"),
        ({"name": "x", "script": {"source": "cat {{ params.f }}"}}, "script.source: templates are not"),
        (
            {"name": "x", "http": {"url": "http://a.test", "body": {"a": DEEP_32}}},
            "http.body: nested 33 deep",
        ),
    ],
    ids=["inline-script", "secret-traversal", "template-in-code", "deep-body"],
)
def test_a_step_that_a_step_returns_gets_the_same_checks(step: dict[str, Any], words: str) -> None:
    graph = [Step.model_validate({"name": "gen", "script": {"source": "x"}})]
    with pytest.raises(SettleError) as refused:
        returned_steps("gen", [step], graph, 10)
    assert words in str(refused.value)


def test_a_workflow_snapshot_is_checked_as_it_is_read_back() -> None:
    # status.workflow.steps is kept as plain JSON and read back through JobSpec
    snapshot = [{"name": "x", "executor": "inline", "script": {"source": "id"}}]
    with pytest.raises(pydantic.ValidationError, match="executor inline is only for http and llm steps"):
        JobSpec.model_validate({"steps": snapshot})


def test_a_problem_reads_as_field_and_message() -> None:
    problem = Problem("spec.params", "nested 40 deep, at most 32")
    assert str(problem) == "spec.params: nested 40 deep, at most 32"
    assert problems([1]) == [Problem("", "a Job or Workflow is a JSON object, not list")]
    assert problems({"kind": "CronJob"}) == [Problem("kind", "expected one of Job, Workflow, got 'CronJob'")]


def test_everything_the_api_server_refuses_is_a_problem_at_the_same_field() -> None:
    # The table of admission refusals that tests/cluster/test_validation.py sends
    # to a real API server; here the same manifests go through kwf's validation.
    from tests.cluster.test_validation import BAD as REFUSED_BY_THE_API_SERVER

    for name, manifest, words in REFUSED_BY_THE_API_SERVER:
        unknown = words[0].removeprefix('unknown field "').removesuffix('"')
        field = unknown if unknown != words[0] else words[0]
        found = [problem.field for problem in problems(manifest)]
        # a duplicate step: the API server names the item, kwf its name
        assert any(f == field or f.startswith(field + ".") for f in found), (name, found)
