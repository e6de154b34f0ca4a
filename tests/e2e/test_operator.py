"""The operator with real step pods on the local node (runner image kwf.local/runner:dev)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kwf.k8s.api import PODS, Client, load_kubeconfig
from tests.support.examples import BY_FILE, EXAMPLES_DIR
from tests.support.operator_process import OperatorProcess
from tests.support.runs import (
    apply_run,
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


@pytest.fixture
async def api(kubeconfig: Path) -> AsyncIterator[Client]:
    async with Client(load_kubeconfig(kubeconfig)) as client:
        yield client


@pytest.fixture
def operator(kubeconfig: Path, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    process = OperatorProcess(kubeconfig, tmp_path / "operator.log", namespaces=[namespace])
    process.start()
    try:
        yield process
    finally:
        process.stop()
        print(f"----- operator log ({process.log_file}) -----\n{process.tail(300)}")


def example(file: str) -> dict[str, JSON]:
    body: dict[str, JSON] = yaml.safe_load((EXAMPLES_DIR / file).read_text())
    return body


async def child_names(api: Client, namespace: str, run: str) -> list[str]:
    return sorted(job["metadata"]["name"] for job in await children(api, namespace, run))


@pytest.mark.parametrize("file", ["counter.yaml", "diamond.yaml", "retry.yaml", "when.yaml", "fallback.yaml"])
async def test_example_runs_to_its_documented_result(
    api: Client, namespace: str, operator: OperatorProcess, file: str
) -> None:
    expected = BY_FILE[file]
    body = example(file)
    await apply_run(api, namespace, body)
    run = await finished(api, namespace, body["metadata"]["name"])
    status = run["status"]
    assert status["phase"] == expected.phase, status
    for key, value in expected.state.items():
        assert status["sharedState"][key] == value
    for step, phase in expected.steps.items():
        assert step_status(run, step)["phase"] == phase
    for step, attempts in expected.attempts.items():
        assert step_status(run, step)["attempts"] == attempts


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
