"""The Argo CD health checks in gitops/argocd, run by a real Lua interpreter.

Argo CD hands the resource to the script as the global `obj`, JSON arrays as
1-based tables, and reads `status` and `message` from the returned table.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from lupa import LuaRuntime

ROOT = Path(__file__).resolve().parents[2]
CHECKS = ROOT / "gitops" / "argocd"
JOB_CHECK = CHECKS / "health-workflow.kwf.dev_Job.lua"
WORKFLOW_CHECK = CHECKS / "health-workflow.kwf.dev_Workflow.lua"


def health(script: Path, obj: dict[str, Any]) -> tuple[str, str]:
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script.read_text())
    return result["status"], result["message"]


def condition(type_: str, status: str, message: str = "", reason: str = "Observed") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


def run(
    status: dict[str, Any] | None = None, *, generation: int = 1, suspend: bool = False
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": "Job",
        "metadata": {"name": "digest", "namespace": "default", "generation": generation},
        "spec": {"suspend": suspend, "steps": [{"name": "a", "script": {"source": "true"}}]},
    }
    if status is not None:
        obj["status"] = status
    return obj


JOB_CASES = [
    pytest.param(run(None), "Progressing", "Waiting for the operator", id="no-status-yet"),
    pytest.param(run({"phase": "Pending", "progress": "0/3", "observedGeneration": 1}),
                 "Progressing", "Pending, 0/3 steps", id="pending"),
    pytest.param(run({"phase": "Running", "progress": "2/5", "observedGeneration": 1}),
                 "Progressing", "Running, 2/5 steps", id="running"),
    pytest.param(run({"phase": "Succeeded", "progress": "5/5", "observedGeneration": 1}),
                 "Healthy", "Succeeded, 5/5 steps", id="succeeded"),
    pytest.param(run({"phase": "Failed", "progress": "3/5", "message": "step fetch failed: HTTP 503"}),
                 "Degraded", "step fetch failed: HTTP 503", id="failed-with-message"),
    pytest.param(run({"phase": "Failed", "progress": "3/5"}), "Degraded", "Failed", id="failed-bare"),
    pytest.param(run({"phase": "Cancelled", "progress": "1/5"}), "Degraded", "Cancelled", id="cancelled"),
    pytest.param(
        run({"phase": "Running", "progress": "1/4", "observedGeneration": 1,
             "conditions": [condition("Ready", "False"),
                            condition("Stalled", "True", "step b depends on unknown step zz", "BadGraph")]}),
        "Degraded", "step b depends on unknown step zz", id="stalled",
    ),
    pytest.param(
        run({"phase": "Running", "progress": "1/4", "observedGeneration": 1,
             "conditions": [condition("Stalled", "False"), condition("Reconciling", "True")]}),
        "Progressing", "Running, 1/4 steps", id="stalled-false",
    ),
    pytest.param(run({"phase": "Running", "progress": "1/4", "observedGeneration": 1}, suspend=True),
                 "Suspended", "Suspended at 1/4 steps", id="suspended"),
    pytest.param(run({"phase": "Succeeded", "progress": "4/4", "observedGeneration": 1}, suspend=True),
                 "Healthy", "Succeeded, 4/4 steps", id="suspend-after-the-end"),
    pytest.param(run({"phase": "Succeeded", "progress": "4/4", "observedGeneration": 1}, generation=2),
                 "Progressing", "observe generation 2", id="status-of-an-older-spec"),
    pytest.param(
        run({"phase": "Running", "progress": "1/4", "observedGeneration": 2,
             "conditions": [condition("Stalled", "True", "", "CycleInGraph")]}, generation=2),
        "Degraded", "CycleInGraph", id="stalled-reason-only",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("obj", "status", "message"), JOB_CASES)
def test_job_health(obj: dict[str, Any], status: str, message: str) -> None:
    got_status, got_message = health(JOB_CHECK, obj)
    assert got_status == status
    assert message in got_message


def test_stalled_without_a_message_reports_its_reason() -> None:
    stalled = {"type": "Stalled", "status": "True", "reason": "CycleInGraph"}
    obj = run({"phase": "Running", "progress": "0/2", "conditions": [stalled]})
    assert health(JOB_CHECK, obj) == ("Degraded", "CycleInGraph")


def workflow(status: dict[str, Any] | None = None, *, generation: int = 1) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "digest", "namespace": "default", "generation": generation},
        "spec": {"steps": [{"name": "a", "script": {"source": "true"}}]},
    }
    if status is not None:
        obj["status"] = status
    return obj


WORKFLOW_CASES = [
    pytest.param(workflow(None), "Healthy", id="no-status"),
    pytest.param(workflow({"observedGeneration": 1, "conditions": [condition("Ready", "True")]}),
                 "Healthy", id="ready"),
    pytest.param(workflow({"observedGeneration": 1, "conditions": [condition("Stalled", "False")]}),
                 "Healthy", id="stalled-false"),
    pytest.param(workflow({"conditions": [condition("Stalled", "True", "cycle: a -> b", "CycleInGraph")]}),
                 "Degraded", id="stalled"),
    pytest.param(workflow({"observedGeneration": 1}, generation=3), "Progressing", id="older-generation"),
]  # fmt: skip


@pytest.mark.parametrize(("obj", "status"), WORKFLOW_CASES)
def test_workflow_health(obj: dict[str, Any], status: str) -> None:
    assert health(WORKFLOW_CHECK, obj)[0] == status


def test_stalled_workflow_says_why() -> None:
    obj = workflow({"conditions": [condition("Stalled", "True", "cycle: a -> b -> a", "CycleInGraph")]})
    assert health(WORKFLOW_CHECK, obj) == ("Degraded", "cycle: a -> b -> a")


@pytest.mark.parametrize("script", [JOB_CHECK, WORKFLOW_CHECK], ids=lambda p: p.stem)
def test_docs_carry_the_same_check(script: Path) -> None:
    """docs/gitops.md shows the argocd-cm entries; they must be these scripts, verbatim."""
    doc = (ROOT / "docs" / "gitops.md").read_text()
    kind = script.stem.rsplit("_", 1)[1]
    key = f"resource.customizations.health.workflow.kwf.dev_{kind}: |\n"
    assert key in doc
    block = doc.split(key, 1)[1]
    assert block.startswith(textwrap.indent(script.read_text(), "    ", lambda line: line.strip() != ""))
