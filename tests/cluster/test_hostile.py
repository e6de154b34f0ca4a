"""What a tenant can create in their own namespace cannot stop the operator or
forge a run's results: objects nested too deeply to read, and batch Jobs and
pods dressed up as a run's children. Against the real control plane (no node:
no pod runs here, so a run that succeeds does it with skipped steps)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from kwf.k8s.api import BATCH_JOBS, EVENTS, KWF_JOBS, PODS, WORKFLOWS, Client, UnreadableAnswer
from kwf.k8s.manifests import LABEL_ATTEMPT, LABEL_JOB, LABEL_JOB_UID, LABEL_STEP, SELECTOR
from tests.support.operator_process import OperatorProcess
from tests.support.runs import (
    apply_run,
    condition,
    finished,
    get_run,
    run_body,
    script,
    step_status,
    wait_for,
)

JSON = Any
DEPTH = 250
SLEEP = "import time; time.sleep(3600)"


def nested(depth: int) -> JSON:
    value: JSON = "bottom"
    for _ in range(depth):
        value = {"deeper": value}
    return value


async def create_deep(api: Client, resource: Any, body: dict[str, JSON], namespace: str) -> None:
    """Create an object too deep for the client to read back: the answer is
    unreadable, the object is there."""
    with contextlib.suppress(UnreadableAnswer):
        await api.create(resource, body, namespace)


async def readable_part(api: Client, namespace: str, name: str) -> dict[str, JSON]:
    """A run as far as the client can read it: its status, when its spec is too deep."""
    try:
        return await get_run(api, namespace, name)
    except UnreadableAnswer as error:
        return error.partial


def stalled(run: dict[str, JSON]) -> bool:
    found = condition(run, "Stalled")
    return found is not None and found["status"] == "True"


async def warnings(api: Client, namespace: str, name: str, reason: str) -> list[dict[str, JSON]]:
    listing = await api.list(EVENTS, namespace, field_selector=f"involvedObject.name={name}")
    return [e for e in listing["items"] if e["reason"] == reason and e["type"] == "Warning"]


SKIPPED = [script("skipped", "print(1)", when="false")]


async def test_objects_nested_too_deeply_are_set_aside_and_every_other_run_goes_on(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    operator.kill()  # they are there when it starts: its first list meets them
    workflow = {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "deep"},
        "spec": {"steps": SKIPPED, "params": {"tree": nested(DEPTH)}},
    }
    await create_deep(api, WORKFLOWS, workflow, namespace)
    await create_deep(api, KWF_JOBS, run_body("deep-run", SKIPPED, params={"tree": nested(DEPTH)}), namespace)
    await apply_run(api, namespace, run_body("by-deep", workflowRef={"name": "deep"}))
    await apply_run(api, namespace, run_body("normal", SKIPPED))
    operator.start()

    run = await finished(api, namespace, "normal", within=60)
    assert run["status"]["phase"] == "Succeeded"

    by_deep = await wait_for(lambda: get_run(api, namespace, "by-deep"), stalled, what="by-deep Stalled")
    found = condition(by_deep, "Stalled")
    assert found is not None and found["reason"] == "InvalidWorkflow"
    assert "Workflow 'deep' cannot be read: spec: nested too deeply to read" in found["message"]

    # The Workflow itself says so: a Warning Event and a Stalled condition, once.
    events = await wait_for(
        lambda: warnings(api, namespace, "deep", "InvalidWorkflow"), bool, what="the Workflow's Warning"
    )
    assert "nested too deeply" in events[0]["message"]
    listing = await api.list(WORKFLOWS, namespace)  # the deep one is left out of the list
    assert [w["metadata"]["name"] for w in listing["items"]] == []
    conditions = await wait_for(
        lambda: _workflow_conditions(api, namespace),
        lambda found: any(c["type"] == "Stalled" and c["status"] == "True" for c in found),
        what="the Workflow's Stalled condition",
    )
    assert any("nested too deeply" in c["message"] for c in conditions)

    # The deep run itself never holds up the others: it ends, or it stalls naming the field.
    deep = await wait_for(
        lambda: readable_part(api, namespace, "deep-run"),
        lambda r: stalled(r) or (r.get("status") or {}).get("phase") == "Succeeded",
        what="deep-run judged",
    )
    if stalled(deep):
        assert "params" in deep["status"]["message"]

    operator.restart()  # and again after a restart: nothing is written twice
    await apply_run(api, namespace, run_body("after-restart", SKIPPED))
    await finished(api, namespace, "after-restart", within=60)
    assert len(await warnings(api, namespace, "by-deep", "InvalidWorkflow")) == 1


async def _workflow_conditions(api: Client, namespace: str) -> list[dict[str, JSON]]:
    # The Workflow is too deep for the client to read whole; its status is not.
    _listing, unreadable = await api.list_items(WORKFLOWS, namespace)
    for bad in unreadable:
        if bad.object["metadata"]["name"] == "deep":
            return list((bad.object.get("status") or {}).get("conditions") or [])
    return []


# ------------------------------------------------------------------ forgeries


def forged_job(run: dict[str, JSON], step: str, attempt: int) -> dict[str, JSON]:
    meta = run["metadata"]
    name = f"{meta['name']}-{step}-{attempt}"
    labels = {
        SELECTOR.split("=")[0]: SELECTOR.split("=")[1],
        LABEL_JOB: meta["name"],
        LABEL_JOB_UID: meta["uid"],
        LABEL_STEP: step,
        LABEL_ATTEMPT: str(attempt),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "workflow.kwf.dev/v1alpha1",
                    "kind": "Job",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "step", "image": "forged.invalid/steal:1"}],
                },
            },
        },
    }


async def forge(api: Client, namespace: str, run: dict[str, JSON], step: str, attempt: int) -> str:
    """A batch Job and a pod that claim to be an attempt of the run, the pod
    ended well with a result that would change the run's state."""
    job = await api.create(BATCH_JOBS, forged_job(run, step, attempt), namespace)
    name = job["metadata"]["name"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-forged",
            "labels": job["spec"]["template"]["metadata"]["labels"],
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": name,
                    "uid": job["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": {"restartPolicy": "Never", "containers": [{"name": "step", "image": "forged.invalid/x:1"}]},
    }
    created = await api.create(PODS, pod, namespace)
    result = '{"output": "forged", "state": {"forged": true}}'
    ended = {
        "phase": "Succeeded",
        "containerStatuses": [
            {
                "name": "step",
                "image": "forged.invalid/x:1",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "message": result,
                        "startedAt": "2030-01-01T00:00:00Z",
                        "finishedAt": "2030-01-01T00:00:01Z",
                    }
                },
            }
        ],
    }
    await api.patch(PODS, created["metadata"]["name"], {"status": ended}, namespace, subresource="status")
    return str(name)


async def test_a_forged_child_job_and_pod_leave_the_run_unchanged(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    steps = [script("first", SLEEP), script("second", SLEEP, dependsOn=["first"])]
    await apply_run(api, namespace, run_body("victim", steps))
    run = await wait_for(
        lambda: get_run(api, namespace, "victim"),
        lambda r: step_status(r, "first").get("job") == "victim-first-1",
        what="the first step launched",
    )
    before = run["status"]

    # A step that never started, and the next attempt of a running one.
    never_started = await forge(api, namespace, run, "second", 1)
    running_next = await forge(api, namespace, run, "first", 2)

    for name in (never_started, running_next):
        found = await wait_for(
            lambda name=name: warnings(api, namespace, "victim", "ChildIgnored"),
            lambda events, name=name: any(name in e["message"] for e in events),
            what=f"the Warning about {name}",
        )
        assert any("is not one of this run's attempts" in e["message"] for e in found)
    await asyncio.sleep(3)  # passes after the forgeries: they would have been applied by now

    run = await get_run(api, namespace, "victim")
    status = run["status"]
    assert status["phase"] == before["phase"] == "Running"
    first, second = step_status(run, "first"), step_status(run, "second")
    assert (first["phase"], first["job"], first["lastAttempt"]) == ("Running", "victim-first-1", 1)
    assert second.get("job") is None and second["phase"] == "Pending"
    assert "forged" not in (status.get("sharedState") or {})
    assert "forged" not in str(status.get("outputs") or {})
    # The run's own child is not stopped in favour of the forged attempt.
    real = await api.get(BATCH_JOBS, "victim-first-1", namespace)
    assert not real["metadata"].get("deletionTimestamp")
    # Each forgery is reported once, however many passes saw it.
    events = await warnings(api, namespace, "victim", "ChildIgnored")
    assert sorted(e["message"].split()[2] for e in events) == sorted([never_started, running_next])
