"""The control plane of the cluster tier answers, stores and runs controllers for real."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from tests.localcluster.kube import Kube

# Pods of these tests must never run, whether or not a node is present.
NOWHERE = {"kwf.dev/test-node": "none"}


def test_apiserver_is_ready(kubectl: Callable[..., str]) -> None:
    assert kubectl("get", "--raw", "/readyz").strip() == "ok"


def test_configmap_round_trip(cluster: Kube, namespace: str) -> None:
    data = {"plain": "value", "json": json.dumps({"counter": 1}), "text": "line 1\nline 2 ünïcode\n"}
    cluster.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "state"}, "data": data}, namespace
    )

    stored = cluster.get("configmap", "state", "-n", namespace)
    assert stored["data"] == data
    assert stored["metadata"]["uid"]
    first_version = stored["metadata"]["resourceVersion"]

    cluster.kubectl(
        "patch", "configmap", "state", "-n", namespace, "--type=merge", "-p", '{"data": {"plain": "new"}}'
    )
    patched = cluster.get("configmap", "state", "-n", namespace)
    assert patched["data"] == {**data, "plain": "new"}
    assert patched["metadata"]["resourceVersion"] != first_version


def test_batch_job_round_trip_and_job_controller(cluster: Kube, namespace: str) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "step-1", "labels": {"kwf.dev/step": "fetch"}},
        "spec": {
            "suspend": True,
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": NOWHERE,
                    "automountServiceAccountToken": False,
                    "containers": [{"name": "step", "image": "kwf.local/runner:dev", "command": ["true"]}],
                }
            },
        },
    }
    cluster.apply(job, namespace)

    stored = cluster.get("jobs.batch", "step-1", "-n", namespace)
    assert stored["metadata"]["labels"]["kwf.dev/step"] == "fetch"
    assert stored["spec"]["backoffLimit"] == 0
    assert stored["spec"]["completions"] == 1  # defaulted by the real API server
    container = stored["spec"]["template"]["spec"]["containers"][0]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert cluster.get("pods", "-n", namespace, "-l", "job-name=step-1")["items"] == []

    # Resumed, the Job controller (kube-controller-manager) creates its pod.
    cluster.kubectl(
        "patch", "job", "step-1", "-n", namespace, "--type=merge", "-p", '{"spec": {"suspend": false}}'
    )
    deadline = time.monotonic() + 30
    while not (pods := cluster.get("pods", "-n", namespace, "-l", "job-name=step-1")["items"]):
        assert time.monotonic() < deadline, "the Job controller created no pod within 30s"
        time.sleep(0.1)
    owner = pods[0]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Job", "step-1", True)
