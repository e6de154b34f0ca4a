"""The operator with real step pods on the local node (runner image kwf.local/runner:dev)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from kwf.k8s.api import EVENTS, KWF_JOBS, PODS, WORKFLOWS, Client
from tests.support.examples import EXAMPLES_DIR
from tests.support.operator_process import OperatorProcess
from tests.support.runs import (
    apply_run,
    apply_workflow,
    children,
    condition,
    finished,
    get_run,
    patch_spec,
    run_body,
    script,
    step_status,
    wait_for,
)

JSON = Any
INCREMENT = """
import json, os
state = json.load(open(os.environ["KWF_STATE"]))
json.dump({"state": {"counter": state.get("counter", 0) + 1}}, open(os.environ["KWF_RESULT"], "w"))
"""


def example(file: str) -> dict[str, JSON]:
    body: dict[str, JSON] = yaml.safe_load((EXAMPLES_DIR / file).read_text())
    return body


async def child_names(api: Client, namespace: str, run: str) -> list[str]:
    return sorted(job["metadata"]["name"] for job in await children(api, namespace, run))


async def test_retries_keep_every_attempt_as_its_own_job(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    await apply_run(api, namespace, example("retry.yaml"))
    await finished(api, namespace, "retry")
    assert await child_names(api, namespace, "retry") == ["retry-flaky-1", "retry-flaky-2", "retry-flaky-3"]


async def test_a_deleted_pod_is_retried_without_spending_the_retry_budget(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    source = (
        "import json, os, time\n"
        "if os.environ['KWF_ATTEMPT'] == '1':\n    time.sleep(600)\n"
        "json.dump({'output': 'second pod'}, open(os.environ['KWF_RESULT'], 'w'))\n"
    )
    await apply_run(api, namespace, run_body("lost", [script("slow", source)]))
    selector = "workflow.kwf.dev/job=lost,workflow.kwf.dev/attempt=1"
    pods = await wait_for(
        lambda: api.list(PODS, namespace, label_selector=selector),
        lambda listing: any(p["status"].get("phase") == "Running" for p in listing["items"]),
        what="the first pod running",
    )
    await api.delete(PODS, pods["items"][0]["metadata"]["name"], namespace)
    run = await finished(api, namespace, "lost")
    assert run["status"]["phase"] == "Succeeded"
    step = step_status(run, "slow")
    assert step["attempts"] == 1  # the retry budget (limit 0) was not spent
    assert step["infraRetries"] == 1
    assert await child_names(api, namespace, "lost") == ["lost-slow-1", "lost-slow-2"]


async def test_cancel_stops_running_steps(api: Client, namespace: str, operator: OperatorProcess) -> None:
    await apply_run(api, namespace, run_body("stop-me", [script("forever", "import time; time.sleep(600)")]))
    await wait_for(
        lambda: get_run(api, namespace, "stop-me"),
        lambda r: step_status(r, "forever").get("phase") == "Running",
        what="the step running",
    )
    await patch_spec(api, namespace, "stop-me", {"cancel": True})
    run = await finished(api, namespace, "stop-me")
    assert run["status"]["phase"] == "Cancelled"
    await wait_for(
        lambda: children(api, namespace, "stop-me"),
        lambda items: all(job["metadata"].get("deletionTimestamp") for job in items),
        what="the child Job deleted",
    )


async def test_suspend_holds_new_steps_until_resumed(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    steps = [script("one", INCREMENT), script("two", INCREMENT, dependsOn=["one"])]
    await apply_run(api, namespace, run_body("held", steps, suspend=True))
    run = await wait_for(
        lambda: get_run(api, namespace, "held"),
        lambda r: (condition(r, "Reconciling") or {}).get("reason") == "Suspended",
        what="the run suspended",
    )
    assert await children(api, namespace, "held") == []
    await patch_spec(api, namespace, "held", {"suspend": False})
    run = await finished(api, namespace, "held")
    assert run["status"]["phase"] == "Succeeded"
    assert run["status"]["sharedState"] == {"counter": 2}


async def test_a_step_timeout_fails_the_step(api: Client, namespace: str, operator: OperatorProcess) -> None:
    await apply_run(
        api, namespace, run_body("slow", [script("sleepy", "import time; time.sleep(600)", timeoutSeconds=3)])
    )
    run = await finished(api, namespace, "slow")
    assert run["status"]["phase"] == "Failed"
    step = step_status(run, "sleepy")
    assert step["phase"] == "Failed"
    assert "timeout" in step["message"] or "timed out" in step["message"]


GREET = """
import json, os
p = json.load(open(os.environ["KWF_PARAMS"]))
state = json.load(open(os.environ["KWF_STATE"]))
result = {"state": {"greeting": f"{p['greeting']}, {p['name']}", "seen": state}}
json.dump(result, open(os.environ["KWF_RESULT"], "w"))
"""


async def test_editing_the_workflow_changes_only_new_runs(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    spec = {
        "params": {"greeting": "hello", "name": "world"},
        "initialState": {"edition": 1},
        "parallelism": 2,
        "steps": [script("greet", GREET)],
    }
    await apply_workflow(api, namespace, "greet", spec)
    # Held before its first step, so the edit lands after it started and before it runs.
    await apply_run(api, namespace, run_body("before", workflowRef={"name": "greet"}, suspend=True))
    held = await wait_for(
        lambda: get_run(api, namespace, "before"),
        lambda r: (r.get("status") or {}).get("workflow") is not None,
        what="the Workflow kept in the run's status",
    )
    kept = held["status"]["workflow"]
    assert kept["params"] == spec["params"] and kept["initialState"] == {"edition": 1}
    assert kept["parallelism"] == 2

    edited = {
        "params": {"greeting": "goodbye", "name": "world"},
        "initialState": {"edition": 2},
        "steps": [script("greet", GREET), script("extra", INCREMENT, dependsOn=["greet"])],
    }
    await api.patch(WORKFLOWS, "greet", {"spec": edited}, namespace)
    await apply_run(api, namespace, run_body("after", workflowRef={"name": "greet"}))
    await patch_spec(api, namespace, "before", {"suspend": False})
    before = await finished(api, namespace, "before")
    after = await finished(api, namespace, "after")

    assert before["status"]["phase"] == after["status"]["phase"] == "Succeeded"
    assert before["status"]["sharedState"]["greeting"] == "hello, world"
    assert before["status"]["sharedState"]["seen"] == {"edition": 1}
    assert [step["name"] for step in before["status"]["steps"]] == ["greet"]
    assert before["status"]["workflow"]["params"] == spec["params"]
    assert after["status"]["sharedState"]["greeting"] == "goodbye, world"
    assert after["status"]["sharedState"]["seen"] == {"edition": 2}
    assert sorted(step["name"] for step in after["status"]["steps"]) == ["extra", "greet"]
    assert await child_names(api, namespace, "before") == ["before-greet-1"]


async def events_of(api: Client, namespace: str, run: str) -> list[dict[str, JSON]]:
    listing = await api.list(EVENTS, namespace, field_selector=f"involvedObject.name={run}")
    return sorted(listing["items"], key=lambda event: event["metadata"]["creationTimestamp"])


async def test_a_finished_run_is_deleted_after_its_ttl_and_its_events_stay(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    created = await apply_run(
        api, namespace, run_body("short-lived", [script("one", INCREMENT)], ttlSecondsAfterFinished=2)
    )
    await wait_for(
        lambda: api.list(KWF_JOBS, namespace),
        lambda listing: not any(item["metadata"]["name"] == "short-lived" for item in listing["items"]),
        what="the run deleted after its ttl",
    )
    events = await wait_for(
        lambda: events_of(api, namespace, "short-lived"),
        lambda items: any(event["reason"] == "Succeeded" for event in items),
        what="the run's Succeeded event",
    )
    assert all(event["involvedObject"]["uid"] == created["metadata"]["uid"] for event in events)
    succeeded = next(event for event in events if event["reason"] == "Succeeded")
    assert succeeded["type"] == "Normal" and succeeded["message"] == "run is succeeded"
    # The run was gone no sooner than its ttl after it finished.
    finished_at = datetime.fromisoformat(succeeded["firstTimestamp"].replace("Z", "+00:00"))
    assert finished_at + timedelta(seconds=1) <= datetime.now(UTC)


async def test_a_step_failure_and_the_run_failing_are_events(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    failing = "import sys; print('disk full', file=sys.stderr); sys.exit(3)"
    steps = [script("doomed", failing, retry={"limit": 1, "backoff": {"seconds": 1}})]
    await apply_run(api, namespace, run_body("sad", steps))
    run = await finished(api, namespace, "sad")
    assert run["status"]["phase"] == "Failed"
    events = await wait_for(
        lambda: events_of(api, namespace, "sad"),
        lambda items: {"StepRetrying", "StepFailed", "Failed"} <= {event["reason"] for event in items},
        what="the failure events",
    )
    reasons = [event["reason"] for event in events]
    assert reasons.count("Failed") == reasons.count("StepFailed") == reasons.count("StepRetrying") == 1, (
        reasons
    )
    by_reason = {event["reason"]: event for event in events}
    assert by_reason["StepRetrying"]["type"] == "Warning"
    assert by_reason["StepRetrying"]["message"].startswith("step doomed attempt 1 failed")
    assert by_reason["StepFailed"]["type"] == "Warning"
    assert by_reason["StepFailed"]["message"].startswith("step doomed failed: ")
    assert "disk full" in by_reason["StepFailed"]["message"] or "exit" in by_reason["StepFailed"]["message"]
    assert by_reason["Failed"]["type"] == "Warning"
    assert by_reason["Failed"]["message"].startswith("run is failed")
