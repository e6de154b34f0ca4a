"""What the API server itself refuses, through the generated CRD schemas.

Each bad manifest goes through `kubectl create --dry-run=server
--validate=strict`, as a user's would, and the refusal must name the field.
Manifests are fed as JSON: kubectl reads YAML 1.1, where a key `n:` is false.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from kwf.api.bounds import HEADER_CHARS, MAX_ARGS, MAX_ENV, MAX_KEYS
from kwf.api.models import MAX_STEPS
from tests.localcluster.kube import Kube

Manifest = dict[str, Any]
TRAVERSAL = "../../kube-system/secrets/x"


def dry_run(cluster: Kube, namespace: str, body: Manifest) -> subprocess.CompletedProcess[str]:
    return cluster.run(
        "create", "--dry-run=server", "--validate=strict", "-n", namespace, "-o", "json",
        "-f", "-", body=body,
    )  # fmt: skip


def script(name: str, **extra: Any) -> Manifest:
    return {"name": name, "script": {"source": "print(1)"}, **extra}


def job(steps: list[Manifest] | None = None, **spec: Any) -> Manifest:
    body: Manifest = {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": "Job",
        "metadata": {"name": "run"},
        "spec": {"steps": steps if steps is not None else [script("a")], **spec},
    }
    return body


def workflow(**spec: Any) -> Manifest:
    return {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "flow"},
        "spec": {"steps": [script("a")], **spec},
    }


def edit(body: Manifest, change: Callable[[Manifest], None]) -> Manifest:
    body = copy.deepcopy(body)
    change(body)
    return body


def step0(**fields: Any) -> Callable[[Manifest], None]:
    return lambda body: body["spec"]["steps"][0].update(fields)


# (id, manifest, words the refusal must contain)
BAD: list[tuple[str, Manifest, list[str]]] = [
    ("steps-empty", job([]), ["spec.steps", "at least 1"]),
    ("parallelism-string", job(parallelism="four"), ["spec.parallelism", "integer"]),
    ("parallelism-zero", job(parallelism=0), ["spec.parallelism", "greater than or equal to 1"]),
    ("parallelism-over", job(parallelism=1001), ["spec.parallelism", "less than or equal to 1000"]),
    ("params-list", job(params=[1, 2]), ["spec.params", "object"]),
    ("step-name-uppercase", job([script("Fetch")]), ["spec.steps[0].name", "should match"]),
    ("step-name-underscore", job([script("fetch_1")]), ["spec.steps[0].name", "should match"]),
    ("step-name-64", job([script("a" * 64)]), ["spec.steps[0].name", "may not be more than 63"]),
    ("step-name-missing", job([{"script": {"source": "x"}}]), ["spec.steps[0].name", "Required value"]),
    (
        "both-ref-and-steps",
        job(workflowRef={"name": "flow"}),
        ["spec", "set exactly one of workflowRef or steps"],
    ),
    (
        "neither-ref-nor-steps",
        edit(job(), lambda b: b["spec"].pop("steps")),
        ["spec", "set exactly one of workflowRef or steps"],
    ),
    (
        "no-step-type",
        job([{"name": "a"}]),
        ["spec.steps[0]", "a step has exactly one of script, container, http, llm"],
    ),
    (
        "two-step-types",
        job([script("a", container={"image": "busybox"})]),
        ["spec.steps[0]", "a step has exactly one of script, container, http, llm"],
    ),
    (
        "duplicate-step-names",
        job([script("a"), script("b"), script("a")]),
        ["spec.steps[2]", "Duplicate value"],
    ),
    (
        "too-many-steps",
        job([script(f"s{i}") for i in range(MAX_STEPS + 1)]),
        ["spec.steps", "must have at most 1000 items"],
    ),
    ("retry-limit-negative", edit(job(), step0(retry={"limit": -1})), ["spec.steps[0].retry.limit", "0"]),
    ("retry-limit-over", edit(job(), step0(retry={"limit": 101})), ["spec.steps[0].retry.limit", "100"]),
    (
        "backoff-factor-below-one",
        edit(job(), step0(retry={"backoff": {"factor": 0.5}})),
        ["spec.steps[0].retry.backoff.factor", "greater than or equal to 1"],
    ),
    (
        "backoff-max-zero",
        edit(job(), step0(retry={"backoff": {"maxSeconds": 0}})),
        ["spec.steps[0].retry.backoff.maxSeconds", "greater than 0"],
    ),
    (
        "step-timeout-zero",
        edit(job(), step0(timeoutSeconds=0)),
        ["spec.steps[0].timeoutSeconds", "greater than 0"],
    ),
    ("deadline-zero", job(activeDeadlineSeconds=0), ["spec.activeDeadlineSeconds", "greater than 0"]),
    ("ttl-negative", job(ttlSecondsAfterFinished=-1), ["spec.ttlSecondsAfterFinished", "0"]),
    ("unknown-spec-field", job(paralelism=2), ['unknown field "spec.paralelism"']),
    ("unknown-step-field", edit(job(), step0(dependOn=["b"])), ['unknown field "spec.steps[0].dependOn"']),
    (
        "unknown-script-field",
        edit(job(), lambda b: b["spec"]["steps"][0]["script"].update(lang="python")),
        ['unknown field "spec.steps[0].script.lang"'],
    ),
    ("save-as-digit", edit(job(), step0(saveAs="1st")), ["spec.steps[0].saveAs", "should match"]),
    ("save-as-empty-segment", edit(job(), step0(saveAs="a..b")), ["spec.steps[0].saveAs", "should match"]),
    (
        "depends-on-bad-name",
        edit(job(), step0(dependsOn=["Up"])),
        ["spec.steps[0].dependsOn[0]", "should match"],
    ),
    (
        "on-failure-bad-name",
        edit(job(), step0(onFailure="clean up")),
        ["spec.steps[0].onFailure", "should match"],
    ),
    (
        "bad-language",
        job([{"name": "a", "script": {"language": "ruby", "source": "x"}}]),
        ["spec.steps[0].script.language", 'Unsupported value: "ruby"'],
    ),
    ("empty-source", job([{"name": "a", "script": {"source": ""}}]), ["spec.steps[0].script.source"]),
    (
        "bad-http-method",
        job([{"name": "a", "http": {"url": "http://x.test", "method": "FETCH"}}]),
        ["spec.steps[0].http.method", 'Unsupported value: "FETCH"'],
    ),
    (
        "http-retries-over",
        job([{"name": "a", "http": {"url": "http://x.test", "retries": 11}}]),
        ["spec.steps[0].http.retries", "less than or equal to 10"],
    ),
    (
        "bad-executor",
        edit(job(), step0(executor="lambda")),
        ["spec.steps[0].executor", 'Unsupported value: "lambda"'],
    ),
    (
        "inline-script",
        edit(job(), step0(executor="inline")),
        ["spec.steps[0]", "executor inline is only for http and llm steps"],
    ),
    (
        "llm-prompt-and-messages",
        job(
            [
                {
                    "name": "a",
                    "llm": {"model": "m", "prompt": "p", "messages": [{"role": "user", "content": "c"}]},
                }
            ]
        ),
        ["spec.steps[0].llm", "set exactly one of prompt or messages"],
    ),
    (
        "llm-bad-role",
        job([{"name": "a", "llm": {"model": "m", "messages": [{"role": "robot", "content": "c"}]}}]),
        ["spec.steps[0].llm.messages[0].role", 'Unsupported value: "robot"'],
    ),
    (
        "llm-temperature-over",
        job([{"name": "a", "llm": {"model": "m", "prompt": "p", "temperature": 3}}]),
        ["spec.steps[0].llm.temperature", "less than or equal to 2"],
    ),
    (
        "env-value-and-secret",
        edit(job(), step0(env=[{"name": "A", "value": "1", "secretKeyRef": {"name": "s", "key": "k"}}])),
        ["spec.steps[0].env[0]", "set exactly one of value or secretKeyRef"],
    ),
    ("env-bad-name", edit(job(), step0(env=[{"name": "1A", "value": "1"}])), ["spec.steps[0].env[0].name"]),
    ("rerun-without-id", job(rerun={"step": "a"}), ["spec.rerun.id", "Required value"]),
    (
        "template-in-script-source",
        job([{"name": "a", "script": {"source": 'echo "{{ params.who }}"'}}]),
        ["spec.steps[0].script.source", "templates are not rendered into code", "$KWF_PARAMS", "$KWF_STATE"],
    ),
    (
        "env-secret-name-traversal",
        edit(job(), step0(env=[{"name": "T", "secretKeyRef": {"name": TRAVERSAL, "key": "k"}}])),
        ["spec.steps[0].env[0].secretKeyRef.name", "should match"],
    ),
    (
        "llm-secret-name-traversal",
        job(
            [
                {
                    "name": "a",
                    "llm": {"model": "m", "prompt": "p", "apiKeySecretRef": {"name": TRAVERSAL, "key": "k"}},
                }
            ]
        ),
        ["spec.steps[0].llm.apiKeySecretRef.name", "should match"],
    ),
    (
        "secret-key-dot-dot",
        edit(job(), step0(env=[{"name": "T", "secretKeyRef": {"name": "s", "key": "../k"}}])),
        ["spec.steps[0].env[0].secretKeyRef.key", "should match"],
    ),
    (
        "workflow-ref-path",
        edit(job(workflowRef={"name": "flow/../x"}), lambda b: b["spec"].pop("steps")),
        ["spec.workflowRef.name", "should match"],
    ),
    (
        "params-too-many-keys",
        job(params={f"k{i}": i for i in range(MAX_KEYS + 1)}),
        ["spec.params", f"must have at most {MAX_KEYS} items"],
    ),
    (
        "env-too-long",
        edit(job(), step0(env=[{"name": f"V{i}", "value": "1"} for i in range(MAX_ENV + 1)])),
        ["spec.steps[0].env", f"must have at most {MAX_ENV} items"],
    ),
    (
        "args-too-long",
        job([{"name": "a", "container": {"image": "busybox", "args": ["x"] * (MAX_ARGS + 1)}}]),
        ["spec.steps[0].container.args", f"must have at most {MAX_ARGS} items"],
    ),
    (
        "header-too-long",
        job([{"name": "a", "http": {"url": "http://x.test", "headers": {"X": "x" * (HEADER_CHARS + 1)}}}]),
        ["spec.steps[0].http.headers.X", "may not be more than"],
    ),
    (
        "expected-status-not-http",
        job([{"name": "a", "http": {"url": "http://x.test", "expectedStatus": [99]}}]),
        ["spec.steps[0].http.expectedStatus[0]", "greater than or equal to 100"],
    ),
    (
        "backoff-factor-over",
        edit(job(), step0(retry={"backoff": {"factor": 101}})),
        ["spec.steps[0].retry.backoff.factor", "less than or equal to 100"],
    ),
    (
        "resource-not-a-quantity",
        edit(job(), step0(resources={"limits": {"memory": "lots"}})),
        ["spec.steps[0].resources.limits.memory", "should match"],
    ),
    ("no-spec", edit(job(), lambda b: b.pop("spec")), ["spec", "Required value"]),
    ("workflow-no-steps", workflow(steps=[]), ["spec.steps", "at least 1 item"]),
    ("workflow-with-ref", workflow(workflowRef={"name": "x"}), ['unknown field "spec.workflowRef"']),
    (
        "workflow-bad-concurrency",
        workflow(schedule={"cron": "@daily", "concurrencyPolicy": "Sometimes"}),
        ["spec.schedule.concurrencyPolicy", 'Unsupported value: "Sometimes"'],
    ),
    (
        "workflow-schedule-no-cron",
        workflow(schedule={"timeZone": "UTC"}),
        ["spec.schedule.cron", "Required value"],
    ),
]


@pytest.mark.parametrize(("body", "words"), [(b, w) for _, b, w in BAD], ids=[i for i, _, _ in BAD])
def test_bad_manifest_is_refused_naming_the_field(
    cluster: Kube, namespace: str, body: Manifest, words: list[str]
) -> None:
    result = dry_run(cluster, namespace, body)
    assert result.returncode != 0, f"accepted: {result.stdout[:500]}"
    for word in words:
        assert word in result.stderr, result.stderr


def test_the_table_of_refusals_is_large_and_distinct() -> None:
    assert len(BAD) >= 20
    assert len({i for i, _, _ in BAD}) == len(BAD)
    assert len({json.dumps(b, sort_keys=True) for _, b, _ in BAD}) == len(BAD)


# ------------------------------------------------------------ accepted at the edges


def test_exactly_the_maximum_of_steps_is_accepted(cluster: Kube, namespace: str) -> None:
    # Every step carries the fields the CEL rules read, so the real per-request
    # cost of evaluating them on the largest allowed list is exercised too.
    steps = [
        {
            "name": f"s{i}",
            "http": {"url": "http://x.test"},
            "executor": "inline",
            "env": [{"name": "A", "value": "1"}],
        }
        for i in range(MAX_STEPS)
    ]
    result = dry_run(cluster, namespace, job(steps))
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["spec"]["steps"]) == MAX_STEPS


def test_a_step_using_every_field_is_accepted_with_defaults_filled_in(cluster: Kube, namespace: str) -> None:
    name = "a" * 63
    steps = [
        {"name": "b", "container": {"image": "busybox", "command": ["true"]}},
        {
            "name": name,
            "dependsOn": ["b"],
            "when": "state.counter < 10",
            "http": {
                "method": "POST",
                "url": "http://x.test/{{ params.n }}",
                "headers": {"accept": "application/json"},
                "body": ["a", {"n": None, "y": 1.5}],
                "expectedStatus": [200],
                "select": "body.items",
            },
            "retry": {"limit": 100, "backoff": {"seconds": 0, "factor": 1}},
            "timeoutSeconds": 1,
            "saveAs": "deep.path_1.x",
            "onFailure": "b",
            "executor": "inline",
            "env": [{"name": "KEY", "secretKeyRef": {"name": "s", "key": "k"}}],
            "resources": {"limits": {"memory": "64Mi"}},
        },
    ]
    params = {"n": 1, "y": "no", "nested": {"list": [1, "two", None, {"x": []}]}}
    result = dry_run(cluster, namespace, job(steps, params=params, parallelism=1000))
    assert result.returncode == 0, result.stderr
    spec = json.loads(result.stdout)["spec"]
    assert spec["params"] == params
    step = spec["steps"][1]
    assert step["http"]["body"] == ["a", {"n": None, "y": 1.5}]
    assert step["retry"] == {"limit": 100, "backoff": {"seconds": 0, "factor": 1, "maxSeconds": 300}}
    assert step["http"]["retries"] == 2 and step["http"]["timeoutSeconds"] == 30
    assert spec["steps"][0]["executor"] == "pod"
    assert spec["suspend"] is False and spec["cancel"] is False


@pytest.mark.parametrize(
    "body",
    [
        edit(job(workflowRef={"name": "flow"}), lambda b: b["spec"].pop("steps")),
        job([{"name": "a", "llm": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}]),
        job([{"name": "a", "http": {"url": "http://x.test", "body": "plain text"}}]),
        workflow(schedule={"cron": "*/5 * * * *", "concurrencyPolicy": "Forbid", "params": {"n": [1]}}),
        edit(
            job(), step0(env=[{"name": "T", "secretKeyRef": {"name": "a.b-c" + "d" * 240, "key": ".x_-.y"}}])
        ),
        job([{"name": "a", "script": {"source": "print('{' '{ not a template }}')"}}]),
    ],
    ids=[
        "workflow-ref",
        "llm-messages",
        "http-text-body",
        "scheduled-workflow",
        "secret-edges",
        "braces-apart",
    ],
)
def test_good_edge_manifest_is_accepted(cluster: Kube, namespace: str, body: Manifest) -> None:
    result = dry_run(cluster, namespace, body)
    assert result.returncode == 0, result.stderr
