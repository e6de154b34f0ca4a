"""The operator process against the real control plane (no node: pods never
run here, so these tests look at what the operator writes and creates)."""

from __future__ import annotations

import pytest

from kwf.k8s.api import BATCH_JOBS, EVENTS, KWF_JOBS, Client
from tests.support.operator_process import OperatorProcess
from tests.support.runs import (
    apply_run,
    apply_workflow,
    children,
    condition,
    get_run,
    run_body,
    script,
    step_status,
    wait_for,
)

SLEEP = "import time; time.sleep(3600)"


def stalled(run: dict[str, object]) -> bool:
    found = condition(run, "Stalled")  # type: ignore[arg-type]
    return found is not None and found["status"] == "True"


async def test_child_jobs_are_created_owned_and_named(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    run = await apply_run(
        api, namespace, run_body("named", [script("first", SLEEP), script("second", SLEEP)])
    )
    jobs = await wait_for(
        lambda: children(api, namespace, "named"), lambda items: len(items) == 2, what="two child Jobs"
    )
    assert sorted(job["metadata"]["name"] for job in jobs) == ["named-first-1", "named-second-1"]
    for job in jobs:
        (ref,) = job["metadata"]["ownerReferences"]
        assert ref["uid"] == run["metadata"]["uid"]
        assert ref["controller"] is True and ref["kind"] == "Job"
        assert job["spec"]["backoffLimit"] == 0
        assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    current = await wait_for(
        lambda: get_run(api, namespace, "named"),
        lambda r: step_status(r, "first").get("job") == "named-first-1",
        what="status naming the child Job",
    )
    assert current["status"]["phase"] == "Running"
    assert step_status(current, "second")["attempts"] == 1


BAD_GRAPHS = {
    "unknown dependency": ([script("a", "pass", dependsOn=["missing-step"])], "missing-step"),
    "cycle": (
        [script("a", "pass", dependsOn=["b"]), script("b", "pass", dependsOn=["a"])],
        "cycle: a -> b -> a",
    ),
    "when does not parse": ([script("a", "pass", when="state.total >")], "step a: when: "),
    "unknown onFailure": ([script("a", "pass", onFailure="rescue")], "step a: onFailure names unknown step"),
}


@pytest.mark.parametrize("problem", BAD_GRAPHS)
async def test_a_graph_problem_stalls_the_run_naming_it(
    api: Client, namespace: str, operator: OperatorProcess, problem: str
) -> None:
    # Each passes the CRD's validation: only the operator can tell.
    steps, named = BAD_GRAPHS[problem]
    await apply_run(api, namespace, run_body("broken", steps))
    run = await wait_for(lambda: get_run(api, namespace, "broken"), stalled, what="Stalled")
    found = condition(run, "Stalled")
    assert found is not None and found["reason"] == "InvalidSpec"
    assert named in found["message"] and named in run["status"]["message"]
    assert await children(api, namespace, "broken") == []
    events = await wait_for(
        lambda: api.list(EVENTS, namespace, field_selector="involvedObject.name=broken"),
        lambda listing: any(e["reason"] == "InvalidSpec" for e in listing["items"]),
        what="the InvalidSpec event",
    )
    assert any(named in e["message"] and e["type"] == "Warning" for e in events["items"])


async def test_a_missing_workflow_stalls_until_it_exists(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    await apply_run(api, namespace, run_body("by-ref", workflowRef={"name": "later"}))
    run = await wait_for(lambda: get_run(api, namespace, "by-ref"), stalled, what="Stalled")
    found = condition(run, "Stalled")
    assert found is not None and found["reason"] == "WorkflowNotFound"
    assert "later" in found["message"]
    await apply_workflow(api, namespace, "later", {"steps": [script("only", SLEEP)]})
    run = await wait_for(
        lambda: get_run(api, namespace, "by-ref"),
        lambda r: not stalled(r) and (r["status"].get("workflow") or {}).get("name") == "later",
        what="run started from the Workflow",
    )
    assert [s["name"] for s in run["status"]["workflow"]["steps"]] == ["only"]
    await wait_for(
        lambda: children(api, namespace, "by-ref"), lambda items: len(items) == 1, what="child Job"
    )


async def test_deleting_a_run_collects_its_children(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    await apply_run(api, namespace, run_body("doomed", [script("a", SLEEP)]))
    await wait_for(
        lambda: children(api, namespace, "doomed"), lambda items: len(items) == 1, what="child Job"
    )
    await api.delete(KWF_JOBS, "doomed", namespace, propagation_policy="Background")
    await wait_for(
        lambda: children(api, namespace, "doomed"),
        lambda items: items == [],
        within=120,
        what="children collected",
    )


async def test_restarts_never_launch_a_step_twice(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    steps = [script(f"s{i}", SLEEP) for i in range(6)]
    operator.kill()
    await apply_run(api, namespace, run_body("restart", steps, parallelism=6))
    for _ in range(6):
        operator.start()
        operator.kill()  # right after it is ready: mid-launch, or between launch and status
    operator.start()
    run = await wait_for(
        lambda: get_run(api, namespace, "restart"),
        lambda r: all(step_status(r, f"s{i}").get("job") for i in range(6)),
        what="every step launched",
    )
    jobs = await api.list(BATCH_JOBS, namespace, label_selector="workflow.kwf.dev/job=restart")
    names = sorted(job["metadata"]["name"] for job in jobs["items"])
    assert names == [f"restart-s{i}-1" for i in range(6)]
    assert all(step_status(run, f"s{i}")["attempts"] == 1 for i in range(6))
