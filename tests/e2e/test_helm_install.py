"""The chart, installed with helm into the local cluster: the operator runs in
its own pod from kwf.local/operator:dev, runs the counter example, survives a
`helm upgrade` in the middle of a run, and `helm uninstall` leaves the CRDs and
the runs in place.

The test cluster's API server listens on the node's loopback only and there is
no kube-proxy, so the operator pod uses the node's network and is pointed at
127.0.0.1 (operator.hostNetwork and extraEnv), as a cluster without a working
`kubernetes` Service would need.
"""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tests.localcluster import Layout

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kwf"
RELEASE = "kwf-e2e"
CRDS = ["jobs.workflow.kwf.dev", "workflows.workflow.kwf.dev"]
T = TypeVar("T")
Manifest = dict[str, Any]


def run(*argv: str | Path, body: Any = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        input=json.dumps(body) if body is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{shlex.join(result.args)}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def wait_for(read: Callable[[], T], done: Callable[[T], bool], what: str, timeout: float = 240) -> T:
    """Poll until done(read()); the deadline is generous, the poll is short."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last seen: {value!r}")
        time.sleep(0.5)


class Cluster:
    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.kubectl_binary = Layout().kubectl
        self.helm_binary = REPO / ".cluster" / "bin" / "helm"

    def kubectl(self, *args: str, body: Any = None) -> subprocess.CompletedProcess[str]:
        return run(self.kubectl_binary, f"--kubeconfig={self.kubeconfig}", *args, body=body)

    def helm(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return run(self.helm_binary, f"--kubeconfig={self.kubeconfig}", "--namespace", self.namespace, *args)

    def get(self, *args: str) -> Any:
        return json.loads(ok(self.kubectl("get", "-n", self.namespace, "-o", "json", *args)))

    def run_status(self, name: str) -> Manifest:
        status: Manifest = self.get("jobs.workflow.kwf.dev", name).get("status") or {}
        return status

    def operator_pods(self) -> list[Manifest]:
        pods: list[Manifest] = self.get("pods", "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]
        return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def is_finished(status: Manifest) -> bool:
    return status.get("phase") in ("Succeeded", "Failed", "Cancelled")


def step(status: Manifest, name: str) -> Manifest:
    return next((s for s in status.get("steps", []) if s["name"] == name), {})


def timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def shell_step(name: str, seconds: int, after: str | None = None) -> Manifest:
    body: Manifest = {
        "name": name,
        "script": {
            "language": "shell",
            "source": f'sleep {seconds}\necho \'{{"output": "{name}"}}\' > "$KWF_RESULT"\n',
        },
    }
    if after:
        body["dependsOn"] = [after]
    return body


@pytest.fixture
def cluster(kubeconfig: Path) -> Iterator[Cluster]:
    subprocess.run(
        [str(REPO / "hack" / "build-helm.sh"), str(REPO / ".cluster" / "bin")], check=True, timeout=1800
    )
    c = Cluster(kubeconfig, f"kwf-helm-{secrets.token_hex(3)}")
    ok(c.kubectl("create", "namespace", c.namespace))
    try:
        yield c
    finally:
        c.helm("uninstall", RELEASE, "--wait")
        # Without an operator nothing removes kopf's finalizer from the runs.
        for item in c.get("jobs.workflow.kwf.dev").get("items", []):
            c.kubectl("patch", "jobs.workflow.kwf.dev", item["metadata"]["name"], "-n", c.namespace,
                      "--type=merge", "-p", '{"metadata":{"finalizers":null}}')  # fmt: skip
        c.kubectl("delete", "namespace", c.namespace, "--wait=false")


def values_for_the_test_cluster(cluster: Cluster, tmp_path: Path) -> Path:
    values = {
        "operator": {
            "image": {"tag": "dev", "pullPolicy": "IfNotPresent"},
            "hostNetwork": True,
            # Ports on the node: picked away from anything else on it.
            "health": {"port": 18471},
            "extraEnv": [
                {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
                {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"},
            ],
        },
        "runner": {"image": {"tag": "dev", "pullPolicy": "IfNotPresent"}},
        "metrics": {"port": 18472},
        # Only this namespace: other tests run their own operators elsewhere.
        "rbac": {"scope": "namespaces"},
    }
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_install_run_upgrade_uninstall(cluster: Cluster, tmp_path: Path) -> None:
    values = values_for_the_test_cluster(cluster, tmp_path)

    # ---- install. The CRDs may exist already (other tests install them with
    # kubectl): the release takes them over, as it would from a manual install.
    ok(cluster.helm("install", RELEASE, CHART, "-f", values, "--take-ownership", "--wait", "--timeout=5m"))
    (pod,) = wait_for(cluster.operator_pods, lambda pods: len(pods) == 1, "one operator pod")
    ok(
        cluster.kubectl(
            "wait",
            "-n",
            cluster.namespace,
            "--for=condition=Ready",
            f"pod/{pod['metadata']['name']}",
            "--timeout=180s",
        )
    )

    # ---- the commands NOTES.txt prints work as printed.
    notes = ok(cluster.helm("get", "notes", RELEASE))
    commands = [line.strip() for line in notes.splitlines() if line.strip().startswith("kubectl ")]
    assert any(c.startswith("kubectl get jobs.workflow") for c in commands), notes
    for command in commands:
        argv = [a for a in shlex.split(command)[1:] if a != "-w"]
        if argv[0] in ("get", "rollout", "logs"):
            ok(cluster.kubectl(*argv))

    # ---- the counter example, applied with kubectl, ends with counter 6.
    counter = yaml.safe_load((REPO / "examples" / "counter.yaml").read_text())
    ok(cluster.kubectl("apply", "-n", cluster.namespace, "-f", "-", body=counter))
    name = counter["metadata"]["name"]
    status = wait_for(lambda: cluster.run_status(name), is_finished, "the counter run to finish")
    assert status["phase"] == "Succeeded", status
    assert status["sharedState"]["counter"] == 6, status

    # ---- upgrade in the middle of a run: the new operator picks it up.
    chain = {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": "Job",
        "metadata": {"name": "through-upgrade"},
        "spec": {
            "steps": [shell_step("first", 0), shell_step("long", 12, "first"), shell_step("last", 0, "long")]
        },
    }
    ok(cluster.kubectl("apply", "-n", cluster.namespace, "-f", "-", body=chain))
    wait_for(
        lambda: cluster.run_status("through-upgrade"),
        lambda s: step(s, "long").get("phase") == "Running",
        "step long running",
    )
    old_uid = pod["metadata"]["uid"]
    ok(
        cluster.helm(
            "upgrade",
            RELEASE,
            CHART,
            "-f",
            values,
            "--set",
            "operator.logLevel=debug",
            "--wait",
            "--timeout=5m",
        )
    )
    (new_pod,) = wait_for(
        cluster.operator_pods,
        lambda pods: len(pods) == 1 and pods[0]["metadata"]["uid"] != old_uid,
        "the new operator pod",
    )
    assert "--verbose" in new_pod["spec"]["containers"][0]["args"]
    status = wait_for(
        lambda: cluster.run_status("through-upgrade"), is_finished, "the run across the upgrade"
    )
    assert status["phase"] == "Succeeded", status
    assert [step(status, s)["attempts"] for s in ("first", "long", "last")] == [1, 1, 1], status
    children = cluster.get("jobs.batch", "-l", "workflow.kwf.dev/job=through-upgrade")["items"]
    assert len(children) == 3, [c["metadata"]["name"] for c in children]
    # `last` could only start once `long` had ended, after the old operator was gone.
    (last,) = [c for c in children if c["metadata"]["labels"]["workflow.kwf.dev/step"] == "last"]
    assert timestamp(last["metadata"]["creationTimestamp"]) >= timestamp(
        new_pod["metadata"]["creationTimestamp"]
    )

    # ---- uninstall: the operator goes, the CRDs and every run stay.
    ok(cluster.helm("uninstall", RELEASE, "--wait", "--timeout=5m"))
    wait_for(cluster.operator_pods, lambda pods: pods == [], "the operator pod to go")
    assert cluster.kubectl("get", "deployment", RELEASE, "-n", cluster.namespace).returncode != 0
    for crd in CRDS:
        ok(cluster.kubectl("get", "crd", crd))
    kept = {item["metadata"]["name"]: item for item in cluster.get("jobs.workflow.kwf.dev")["items"]}
    assert kept.keys() == {"counter", "through-upgrade"}
    assert kept["counter"]["status"]["sharedState"]["counter"] == 6
