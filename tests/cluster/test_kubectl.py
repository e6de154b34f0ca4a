"""What users see through the real kubectl: names, printer columns, explain.

`jobs` exists in two groups; kubectl must keep `kubectl get jobs` on batch/v1
and resolve `jobs.workflow` (a partial group) to kwf's Jobs.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.localcluster.kube import Kube


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def table(text: str) -> list[list[str]]:
    """kubectl's table, cut at the header's column starts (cells may be empty or hold spaces)."""
    header, *rows = text.rstrip("\n").splitlines()
    starts = [match.start() for match in re.finditer(r"(?:^|(?<=\s\s))\S", header)]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [[line[a:b].strip() for a, b in bounds] for line in (header, *rows)]


STEPS = [{"name": "fetch", "script": {"source": "print(1)"}}]


@pytest.fixture
def resources(cluster: Kube, namespace: str) -> str:
    """One of each kind named `digest` (a kwf Job, a Workflow, a batch/v1 Job)."""
    kwf_job = {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": "Job",
        "metadata": {"name": "digest"},
        "spec": {"workflowRef": {"name": "digest"}},
    }
    flow = {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "digest"},
        "spec": {"steps": STEPS, "schedule": {"cron": "*/5 * * * *"}},
    }
    batch_job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "batch-digest"},
        "spec": {
            "suspend": True,  # no pod: only the listing matters here
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}
            },
        },
    }
    for body in (kwf_job, flow, batch_job):
        ok(cluster.run("create", "-n", namespace, "-f", "-", body=body))
    status = {"status": {"phase": "Running", "progress": "1/3", "message": "fetch: attempt 2 of 4"}}
    ok(cluster.run(
        "patch", "jobs.workflow", "digest", "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps(status),
    ))  # fmt: skip
    return namespace


def test_jobs_workflow_lists_kwf_jobs_with_their_columns(resources: str, cluster: Kube) -> None:
    rows = table(ok(cluster.run("get", "jobs.workflow", "-n", resources)))
    assert rows[0] == ["NAME", "PHASE", "PROGRESS", "AGE", "MESSAGE"]
    assert len(rows) == 2
    name, phase, progress, age, message = rows[1]
    assert (name, phase, progress, message) == ("digest", "Running", "1/3", "fetch: attempt 2 of 4")
    assert age.endswith("s") or age.endswith("m"), age


def test_wide_output_adds_the_workflow(resources: str, cluster: Kube) -> None:
    rows = table(ok(cluster.run("get", "jobs.workflow", "-n", resources, "-o", "wide")))
    assert rows[0][:6] == ["NAME", "PHASE", "PROGRESS", "AGE", "MESSAGE", "WORKFLOW"]
    assert rows[1][5] == "digest"


def test_plain_jobs_stay_batch_jobs(resources: str, cluster: Kube) -> None:
    rows = table(ok(cluster.run("get", "jobs", "-n", resources)))
    assert rows[0][0] == "NAME" and "COMPLETIONS" in rows[0]
    assert [row[0] for row in rows[1:]] == ["batch-digest"]


@pytest.mark.parametrize("name", ["kwfjob", "jobs.workflow", "jobs.workflow.kwf.dev", "job.workflow.kwf.dev"])
def test_every_name_of_the_kwf_job_resolves_to_it(resources: str, cluster: Kube, name: str) -> None:
    out = ok(cluster.run("get", name, "-n", resources, "-o", "name"))
    assert out.split() == ["job.workflow.kwf.dev/digest"]


def test_kwf_is_the_workflow_short_name_and_kwf_all_lists_both(resources: str, cluster: Kube) -> None:
    workflows = table(ok(cluster.run("get", "kwf", "-n", resources)))
    assert workflows[0] == ["NAME", "SCHEDULE", "SUSPEND", "LAST SCHEDULE", "AGE"]
    assert workflows[1][:4] == ["digest", "*/5 * * * *", "false", ""]
    both = ok(cluster.run("get", "kwf-all", "-n", resources, "-o", "name"))
    assert sorted(both.split()) == ["job.workflow.kwf.dev/digest", "workflow.workflow.kwf.dev/digest"]


def test_explain_shows_the_models_descriptions(cluster: Kube) -> None:
    # `kubectl explain jobs.workflow...` would read `workflow` as a field of
    # batch Jobs: explain takes the short name, or jobs with --api-version.
    out = ok(cluster.run("explain", "kwfjob.spec.steps.retry.backoff"))
    assert "capped by `maxSeconds`" in out
    assert "maxSeconds\t<number>" in out
    out = ok(cluster.run("explain", "jobs.spec.parallelism", "--api-version=workflow.kwf.dev/v1alpha1"))
    assert "steps running at once" in out
