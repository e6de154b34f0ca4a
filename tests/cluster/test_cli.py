"""The real ``kwf`` executable against the real API server.

No operator runs here: these tests check what the CLI reads and writes. What
``get`` and ``watch`` show is written by the test through the status
subresource, as the operator would.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from subprocess import PIPE
from typing import Any

import pytest
import yaml

from kwf.clusterctl.shared_state import update_shared_state
from kwf.k8s.api import KWF_JOBS, PODS, Client
from kwf.k8s.manifests import LABEL_ATTEMPT, LABEL_JOB, LABEL_JOB_UID, LABEL_STEP
from tests.support.runs import run_body, script

JSON = Any
REPO = Path(__file__).resolve().parents[2]
KWF = REPO / ".venv" / "bin" / "kwf"
STEPS = [
    script("fetch", "print(1)"),
    script("count", "print(2)", dependsOn=["fetch"]),
    script("summarize", "print(3)", dependsOn=["fetch"]),
    script("report", "print(4)", dependsOn=["count", "summarize"]),
]


@pytest.fixture
def kwf(kubeconfig: Path, namespace: str) -> Any:
    """Run ``kwf ARGS -n <namespace>`` with the cluster's kubeconfig in $KUBECONFIG."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "NO_COLOR": "1", "COLUMNS": "200"}

    def call(*args: str, namespaced: bool = True) -> subprocess.CompletedProcess[str]:
        extra = ["-n", namespace] if namespaced else []
        return subprocess.run(
            [str(KWF), *args, *extra], capture_output=True, text=True, env=env, timeout=120, check=False
        )

    call.env = env  # type: ignore[attr-defined]
    return call


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:{result.stdout}\nstderr:{result.stderr}"
    return result.stdout


async def new_run(api: Client, namespace: str, name: str, **spec: JSON) -> dict[str, JSON]:
    return await api.create(KWF_JOBS, run_body(name, STEPS, **spec), namespace)


async def write_status(api: Client, namespace: str, name: str, status: Mapping[str, JSON]) -> None:
    await api.patch(KWF_JOBS, name, {"status": dict(status)}, namespace, subresource="status")


def write_file(path: Path, *docs: Mapping[str, JSON]) -> Path:
    path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
    return path


RUNNING = {
    "phase": "Running",
    "progress": "1/4",
    "startedAt": "2030-01-01T10:00:00Z",
    "steps": [
        {
            "name": "fetch",
            "phase": "Succeeded",
            "attempts": 1,
            "startedAt": "2030-01-01T10:00:00Z",
            "finishedAt": "2030-01-01T10:00:02Z",
            "output": "kopf",
        },
        {"name": "count", "phase": "Running", "attempts": 2, "startedAt": "2030-01-01T10:00:03Z"},
        {"name": "summarize", "phase": "Failed", "attempts": 1, "message": "exit code 3"},
    ],
    "sharedState": {"counter": 7, "description": "a framework"},
}


# ------------------------------------------------------------------ submit


def test_submit_a_job_file_with_params(kwf: Any, tmp_path: Path, namespace: str) -> None:
    body = run_body("digest-1", STEPS, params={"repo": "a/b", "depth": 1})
    out = ok(kwf("submit", str(write_file(tmp_path / "run.yaml", body)), "-p", "repo=nolar/kopf"))
    assert out.strip() == "job.workflow.kwf.dev/digest-1 created"
    live = json.loads(ok(kwf("get", "digest-1", "-o", "json")))
    assert live["metadata"]["namespace"] == namespace
    assert live["spec"]["params"] == {"repo": "nolar/kopf", "depth": 1}
    assert "managedFields" not in live["metadata"]
    # A run starts once: the same name again is refused, naming it.
    again = kwf("submit", str(tmp_path / "run.yaml"))
    assert again.returncode == 2
    assert "'digest-1' already exists" in again.stderr


def test_submit_a_workflow_with_run(kwf: Any, tmp_path: Path, namespace: str) -> None:
    workflow = {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "digest"},
        "spec": {"steps": STEPS, "params": {"repo": "x/y"}},
    }
    file = write_file(tmp_path / "wf.yaml", workflow)
    first = json.loads(ok(kwf("submit", str(file), "--run", "-p", "repo=nolar/kopf", "-o", "json")))
    assert [item["kind"] for item in first["items"]] == ["Workflow", "Job"]
    job = first["items"][1]
    assert job["metadata"]["name"].startswith("digest-")
    assert job["spec"]["workflowRef"] == {"name": "digest"}
    assert job["spec"]["params"] == {"repo": "nolar/kopf"}
    # Submitting again updates the Workflow and starts another run.
    out = ok(kwf("submit", str(file), "--run"))
    lines = out.strip().splitlines()
    assert lines[0] == "workflow.workflow.kwf.dev/digest configured"
    assert lines[1].startswith("job.workflow.kwf.dev/digest-") and lines[1].endswith(" created")
    assert lines[1].split()[0].split("/")[1] != job["metadata"]["name"]


def test_submit_refuses_a_bad_file_and_creates_nothing(kwf: Any, tmp_path: Path) -> None:
    good = run_body("fine-1", STEPS)
    bad = run_body("bad-1", [{"name": "Bad_Name", "script": {"source": "x"}}])
    result = kwf("submit", str(write_file(tmp_path / "two.yaml", good, bad)))
    assert result.returncode == 2
    assert "two.yaml#2" in result.stderr and "spec.steps[0].name" in result.stderr
    missing = kwf("get", "fine-1")
    assert missing.returncode == 3


def test_submit_params_need_a_run(kwf: Any, tmp_path: Path) -> None:
    workflow = {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "lonely"},
        "spec": {"steps": STEPS},
    }
    result = kwf("submit", str(write_file(tmp_path / "wf.yaml", workflow)), "-p", "a=1")
    assert result.returncode == 2 and "--run" in result.stderr


# --------------------------------------------------------------------- get


async def test_get_names_a_missing_run_and_its_namespace(kwf: Any, namespace: str) -> None:
    result = kwf("get", "nope")
    assert result.returncode == 3
    assert f"run 'nope' not found in namespace '{namespace}'" in result.stderr


async def test_get_shows_the_step_tree_and_the_shared_state(api: Client, kwf: Any, namespace: str) -> None:
    await new_run(api, namespace, "tree-1")
    await write_status(api, namespace, "tree-1", RUNNING)
    out = ok(kwf("get", "tree-1"))
    lines = out.splitlines()
    assert f"run tree-1  namespace {namespace}" in lines[0]
    assert "phase Running  progress 1/4" in out

    def line(step: str) -> str:
        [found] = [text for text in lines if f"{step}  " in text]
        return found

    def depth(step: str) -> int:
        text = line(step)
        return len(text) - len(text.lstrip(" │├└─"))

    assert "Succeeded" in line("fetch") and "2.0s" in line("fetch") and "kopf" in line("fetch")
    assert "Running" in line("count") and "attempt 2" in line("count")
    assert "Failed" in line("summarize") and "exit code 3" in line("summarize")
    assert "Pending" in line("report") and "(after count, summarize)" in line("report")
    assert depth("count") > depth("fetch") and depth("summarize") == depth("count")
    assert depth("report") > depth("count")
    assert "shared state: 2 key(s)" in out and "counter: 7" in out

    as_yaml = yaml.safe_load(ok(kwf("get", "tree-1", "-o", "yaml")))
    assert as_yaml["status"]["sharedState"] == RUNNING["sharedState"]


# ---------------------------------------------------------------- controls


async def test_cancel_suspend_resume_patch_the_spec(api: Client, kwf: Any, namespace: str) -> None:
    await new_run(api, namespace, "steer-1")
    assert ok(kwf("suspend", "steer-1")).startswith("run steer-1: suspended")
    assert (await api.get(KWF_JOBS, "steer-1", namespace))["spec"]["suspend"] is True
    ok(kwf("resume", "steer-1"))
    assert (await api.get(KWF_JOBS, "steer-1", namespace))["spec"]["suspend"] is False
    as_json = json.loads(ok(kwf("cancel", "steer-1", "-o", "json")))
    assert as_json["spec"]["cancel"] is True
    assert (await api.get(KWF_JOBS, "steer-1", namespace))["spec"]["cancel"] is True
    missing = kwf("cancel", "nope")
    assert missing.returncode == 3 and "'nope' not found" in missing.stderr


async def test_cancel_of_a_finished_run_changes_nothing(api: Client, kwf: Any, namespace: str) -> None:
    await new_run(api, namespace, "done-1")
    await write_status(api, namespace, "done-1", {"phase": "Succeeded", "progress": "4/4"})
    result = kwf("cancel", "done-1")
    assert result.returncode == 0 and "already finished (Succeeded)" in result.stderr
    assert (await api.get(KWF_JOBS, "done-1", namespace))["spec"]["cancel"] is False


async def test_retry_sets_a_new_rerun_request_each_time(api: Client, kwf: Any, namespace: str) -> None:
    await new_run(api, namespace, "again-1")
    ok(kwf("retry", "again-1", "--step", "count"))
    first = (await api.get(KWF_JOBS, "again-1", namespace))["spec"]["rerun"]
    assert first["step"] == "count"
    ok(kwf("retry", "again-1"))
    second = (await api.get(KWF_JOBS, "again-1", namespace))["spec"]["rerun"]
    assert "step" not in second and second["id"] != first["id"]
    unknown = kwf("retry", "again-1", "--step", "nosuch")
    assert unknown.returncode == 2
    assert "no step 'nosuch'" in unknown.stderr and "fetch, count" in unknown.stderr


# ------------------------------------------------------------------- state


async def test_state_set_and_get(api: Client, kwf: Any, namespace: str) -> None:
    await new_run(api, namespace, "state-1")
    await write_status(api, namespace, "state-1", {"sharedState": {"counter": 1, "keep": "me"}})
    ok(kwf("state", "set", "state-1", "counter=2", "report.title=Weekly", "report.pages=3", "name=kopf"))
    state = json.loads(ok(kwf("state", "get", "state-1", "-o", "json")))
    assert state == {"counter": 2, "keep": "me", "report": {"title": "Weekly", "pages": 3}, "name": "kopf"}
    assert ok(kwf("state", "get", "state-1", "report.title")) == "Weekly\n"
    assert yaml.safe_load(ok(kwf("state", "get", "state-1", "report", "-o", "yaml"))) == {
        "title": "Weekly",
        "pages": 3,
    }
    ok(kwf("state", "set", "state-1", "keep=null"))
    assert "keep" not in json.loads(ok(kwf("state", "get", "state-1")))
    missing = kwf("state", "get", "state-1", "report.nosuch")
    assert missing.returncode == 3 and "'report.nosuch'" in missing.stderr
    bad = kwf("state", "set", "state-1", "novalue")
    assert bad.returncode == 2 and "key=value" in bad.stderr


async def test_state_set_over_the_size_limit_writes_nothing(api: Client, kwf: Any, namespace: str) -> None:
    await new_run(api, namespace, "big-1")
    # Three values of 100 KiB (one argument may not exceed 128 KiB).
    blobs = [f"{key}=" + "x" * (100 * 1024) for key in ("a", "b", "c")]
    result = kwf("state", "set", "big-1", *blobs)
    assert result.returncode == 2
    assert "over the limit of 256 KiB" in result.stderr
    status = (await api.get(KWF_JOBS, "big-1", namespace)).get("status") or {}
    assert not (status.get("sharedState") or {})


async def test_a_stale_write_meets_409_rereads_and_keeps_the_other_writers_key(
    api: Client, namespace: str
) -> None:
    await new_run(api, namespace, "race-1")
    stale = await api.get(KWF_JOBS, "race-1", namespace)
    # Someone else writes between our read and our write.
    await write_status(api, namespace, "race-1", {"sharedState": {"theirs": 1}})
    written = await update_shared_state(api, namespace, "race-1", {"ours": 2}, current=stale)
    assert written.attempts == 2
    assert written.state == {"theirs": 1, "ours": 2}
    live = await api.get(KWF_JOBS, "race-1", namespace)
    assert live["status"]["sharedState"] == {"theirs": 1, "ours": 2}
    assert live["metadata"]["resourceVersion"] == written.resource_version


async def test_concurrent_cli_writers_all_land(api: Client, kwf: Any, namespace: str) -> None:
    await new_run(api, namespace, "many-1")
    writers = [
        await asyncio.create_subprocess_exec(
            str(KWF),
            "state",
            "set",
            "many-1",
            f"k{i}={i}",
            "-n",
            namespace,
            env=kwf.env,
            stdout=PIPE,
            stderr=PIPE,
        )
        for i in range(6)
    ]
    for writer in writers:
        _, err = await asyncio.wait_for(writer.communicate(), 120)
        assert writer.returncode == 0, err.decode()
    state = (await api.get(KWF_JOBS, "many-1", namespace))["status"]["sharedState"]
    assert state == {f"k{i}": i for i in range(6)}


# ------------------------------------------------------------------- watch


async def test_watch_ends_with_the_run_and_its_outcome(api: Client, kwf: Any, namespace: str) -> None:
    await new_run(api, namespace, "watch-1")
    await write_status(api, namespace, "watch-1", RUNNING)
    watcher = await asyncio.create_subprocess_exec(
        str(KWF), "watch", "watch-1", "-n", namespace, env=kwf.env, stdout=PIPE, stderr=PIPE
    )
    try:
        # The watcher prints the running state first: once it has, finish the run.
        assert watcher.stdout is not None
        first = await asyncio.wait_for(watcher.stdout.readline(), 120)
        assert first.decode().strip() == "fetch: Succeeded"
        steps = [{**step, "phase": "Succeeded"} for step in RUNNING["steps"]]
        await write_status(api, namespace, "watch-1", {"phase": "Failed", "steps": steps})
        out, err = await asyncio.wait_for(watcher.communicate(), 120)
    finally:
        if watcher.returncode is None:
            watcher.kill()
    assert watcher.returncode == 1, err.decode()
    assert "count: Succeeded" in out.decode() and "run failed" in out.decode()


async def test_watch_of_a_succeeded_run_exits_zero(api: Client, kwf: Any, namespace: str) -> None:
    await new_run(api, namespace, "watch-2")
    await write_status(api, namespace, "watch-2", {"phase": "Succeeded", "progress": "4/4"})
    result = kwf("watch", "watch-2", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"]["phase"] == "Succeeded"
    assert kwf("watch", "nope").returncode == 3


# -------------------------------------------------------------------- logs

# Pods that no node takes: their logs stay "not started", whatever nodes exist.
NEVER_SCHEDULED = {
    "nodeSelector": {"kwf.test/no-such-node": "true"},
    "containers": [{"name": "step", "image": "kwf.local/runner:dev"}],
}


async def test_logs_find_the_step_pods_by_their_labels(api: Client, kwf: Any, namespace: str) -> None:
    run = await new_run(api, namespace, "logs-1")
    uid = run["metadata"]["uid"]
    for step, attempt in (("fetch", 1), ("count", 1), ("count", 2)):
        labels = {LABEL_JOB: "logs-1", LABEL_JOB_UID: uid, LABEL_STEP: step, LABEL_ATTEMPT: str(attempt)}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"logs-1-{step}-{attempt}", "labels": labels},
            "spec": NEVER_SCHEDULED,
        }
        await api.create(PODS, pod, namespace)
    # A pod of a namesake run (another uid) is not this run's.
    stranger = {LABEL_JOB: "logs-1", LABEL_JOB_UID: "other", LABEL_STEP: "fetch", LABEL_ATTEMPT: "9"}
    await api.create(
        PODS,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "stranger", "labels": stranger},
            "spec": NEVER_SCHEDULED,
        },
        namespace,
    )
    out = ok(kwf("logs", "logs-1"))
    headers = [line for line in out.splitlines() if line.startswith("==> ")]
    # Unscheduled pods have no log yet: each is still named, in step/attempt order.
    assert headers == [
        "==> step count, attempt 1 (pod logs-1-count-1) <==",
        "==> step count, attempt 2 (pod logs-1-count-2) <==",
        "==> step fetch, attempt 1 (pod logs-1-fetch-1) <==",
    ]
    only = ok(kwf("logs", "logs-1", "fetch"))
    assert "==>" not in only and "(no log" in only
    none = kwf("logs", "logs-1", "report")
    assert none.returncode == 3 and "no pods of step 'report'" in none.stderr


# ------------------------------------------------------------------ config


def test_a_missing_kubeconfig_is_a_clear_error(kwf: Any, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(KWF), "get", "x", "--kubeconfig", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        env={**kwf.env, "KUBECONFIG": ""},
        timeout=60,
        check=False,
    )
    assert result.returncode == 4
    assert "cannot use kubeconfig" in result.stderr and "none" in result.stderr
