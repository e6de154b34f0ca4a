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
import shlex
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tests.localcluster.kube import Kube
from tests.support import chart
from tests.support.chart import ok
from tests.support.tools import tool

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kwf"
RELEASE = "kwf-e2e"
CRDS = ["jobs.workflow.kwf.dev", "workflows.workflow.kwf.dev"]
T = TypeVar("T")
Manifest = dict[str, Any]


def run(*argv: str | Path, body: Any = None) -> subprocess.CompletedProcess[str]:
    """helm and kubectl get longer here than in the chart tests: installs wait for pods."""
    return chart.run(*argv, body=body, timeout=600)


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


class Release:
    """helm and kubectl aimed at the release's namespace."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kubeconfig = kube.kubeconfig
        self.namespace = namespace
        self.kubectl_binary = kube.kubectl_path
        self.helm_binary = tool("helm")

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
def release(cluster: Kube, make_namespace: Callable[[], str]) -> Iterator[Release]:
    r = Release(cluster, make_namespace())
    try:
        yield r
    finally:
        # Shown by pytest when the test failed: what the operator pod went through.
        selector = f"app.kubernetes.io/instance={RELEASE}"
        for args in (("get", "pods", "-o", "wide"), ("describe", "pods", "-l", selector),
                     ("logs", "-l", selector, "--tail=200", "--all-containers")):  # fmt: skip
            print(r.kubectl(*args, "-n", r.namespace).stdout)
        r.helm("uninstall", RELEASE, "--wait")
        # Without an operator nothing removes kopf's finalizer from the runs,
        # and the namespace would never go.
        for item in r.get("jobs.workflow.kwf.dev").get("items", []):
            r.kubectl("patch", "jobs.workflow.kwf.dev", item["metadata"]["name"], "-n", r.namespace,
                      "--type=merge", "-p", '{"metadata":{"finalizers":null}}')  # fmt: skip


def image(reference: str) -> Manifest:
    repository, tag = reference.rsplit(":", 1)
    return {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"}


def values_for(cluster_kind: str, operator_image: str, runner_image: str, tmp_path: Path) -> Path:
    values: Manifest = {
        "operator": {"image": image(operator_image)},
        "runner": {"image": image(runner_image)},
        # Only this namespace: other tests run their own operators elsewhere.
        "rbac": {"scope": "namespaces"},
    }
    if cluster_kind == "local":
        values["operator"] |= {
            "hostNetwork": True,
            # Ports on the node now: picked away from anything else on it.
            "health": {"port": 18471},
            "extraEnv": [
                {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
                {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"},
            ],
        }
        values["metrics"] = {"port": 18472}
        # The local node has no kube-proxy: the API server cannot reach a
        # Service's address, so the webhook is tested apart (tests/cluster/test_admission.py).
        values["webhook"] = {"enabled": False}
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_install_run_upgrade_uninstall(
    release: Release, cluster_kind: str, operator_image: str, runner_image: str, tmp_path: Path
) -> None:
    values = values_for(cluster_kind, operator_image, runner_image, tmp_path)

    # ---- install. The CRDs may exist already (other tests install them with
    # kubectl): the release takes them over, as it would from a manual install.
    ok(
        release.helm(
            "install",
            RELEASE,
            CHART,
            "-f",
            values,
            "--take-ownership",
            "--force-conflicts",
            "--wait",
            "--timeout=5m",
        )
    )
    (pod,) = wait_for(release.operator_pods, lambda pods: len(pods) == 1, "one operator pod")
    ok(
        release.kubectl(
            "wait",
            "-n",
            release.namespace,
            "--for=condition=Ready",
            f"pod/{pod['metadata']['name']}",
            "--timeout=180s",
        )
    )

    # ---- the commands NOTES.txt prints work as printed.
    notes = ok(release.helm("get", "notes", RELEASE))
    commands = [line.strip() for line in notes.splitlines() if line.strip().startswith("kubectl ")]
    assert any(c.startswith("kubectl get jobs.workflow") for c in commands), notes
    # The run NOTES.txt shows how to start, fed to kubectl as its heredoc would be.
    heredoc = notes.split("<<'YAML'", 1)[1].split("\n", 1)[1].split("\n  YAML\n", 1)[0]
    hello = yaml.safe_load(textwrap.dedent(heredoc))
    ok(release.kubectl("apply", "-n", release.namespace, "-f", "-", body=hello))
    status = wait_for(lambda: release.run_status("hello"), is_finished, "the run from NOTES.txt")
    assert status["phase"] == "Succeeded", status
    for command in commands:
        argv = [a for a in shlex.split(command)[1:] if a != "-w"]
        if argv[0] != "apply":
            ok(release.kubectl(*argv))

    # ---- the counter example, applied with kubectl, ends with counter 6.
    counter = yaml.safe_load((REPO / "examples" / "counter.yaml").read_text())
    ok(release.kubectl("apply", "-n", release.namespace, "-f", "-", body=counter))
    name = counter["metadata"]["name"]
    status = wait_for(lambda: release.run_status(name), is_finished, "the counter run to finish")
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
    ok(release.kubectl("apply", "-n", release.namespace, "-f", "-", body=chain))
    wait_for(
        lambda: release.run_status("through-upgrade"),
        lambda s: step(s, "long").get("phase") == "Running",
        "step long running",
    )
    old_uid = pod["metadata"]["uid"]
    ok(
        release.helm(
            "upgrade",
            RELEASE,
            CHART,
            "-f",
            values,
            "--set",
            "operator.logLevel=debug",
            "--force-conflicts",
            "--wait",
            "--timeout=5m",
        )
    )
    (new_pod,) = wait_for(
        release.operator_pods,
        lambda pods: len(pods) == 1 and pods[0]["metadata"]["uid"] != old_uid,
        "the new operator pod",
    )
    assert "--verbose" in new_pod["spec"]["containers"][0]["args"]
    status = wait_for(
        lambda: release.run_status("through-upgrade"), is_finished, "the run across the upgrade"
    )
    assert status["phase"] == "Succeeded", status
    assert [step(status, s)["attempts"] for s in ("first", "long", "last")] == [1, 1, 1], status
    children = release.get("jobs.batch", "-l", "workflow.kwf.dev/job=through-upgrade")["items"]
    assert len(children) == 3, [c["metadata"]["name"] for c in children]
    # `last` could only start once `long` had ended, after the old operator was gone.
    (last,) = [c for c in children if c["metadata"]["labels"]["workflow.kwf.dev/step"] == "last"]
    assert timestamp(last["metadata"]["creationTimestamp"]) >= timestamp(
        new_pod["metadata"]["creationTimestamp"]
    )

    # ---- uninstall: the operator goes, the CRDs and every run stay.
    ok(release.helm("uninstall", RELEASE, "--wait", "--timeout=5m"))
    wait_for(release.operator_pods, lambda pods: pods == [], "the operator pod to go")
    assert release.kubectl("get", "deployment", RELEASE, "-n", release.namespace).returncode != 0
    for crd in CRDS:
        ok(release.kubectl("get", "crd", crd))
    kept = {item["metadata"]["name"]: item for item in release.get("jobs.workflow.kwf.dev")["items"]}
    assert kept.keys() == {"hello", "counter", "through-upgrade"}
    assert kept["counter"]["status"]["sharedState"]["counter"] == 6
