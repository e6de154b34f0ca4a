"""A step-shaped pod on the real node: isolated as kwf's step pods are, and still able to answer.

One batch/v1 Job runs the runner image with the security settings of a step
pod; its container probes its own sandbox and reports through the
termination message. The tests below read that one run from different sides.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.localcluster.kube import Kube

RESULT_PATH = "/var/run/kwf/result.json"
GREETING = b"hello from the host\n"

# Runs inside the pod: every probe ends in a short string, never an exception.
PROBE = """
import json, os, socket, sys

def connect(host, port, send=None):
    try:
        with socket.create_connection((host, int(port)), timeout=3) as conn:
            return "answered: " + conn.recv(100).decode() if send is None else "connected"
    except OSError as error:
        return "failed: %s" % error

report = {"uid": os.getuid(), "gid": os.getgid()}
try:
    open("/written-by-step", "w").close()
    report["root_write"] = "succeeded"
except OSError as error:
    report["root_write"] = "failed: %s" % error.strerror
report["token_mounted"] = os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount")
service = os.environ.get("KUBERNETES_SERVICE_HOST")
port = os.environ.get("KUBERNETES_SERVICE_PORT")
report["api_service"] = connect(service, port, send=True) if service else "no service env"
report["api_on_host"] = connect(sys.argv[1], 6443, send=True)
report["host_server"] = connect(sys.argv[1], sys.argv[2])
report["capabilities"] = [line.split()[1] for line in open("/proc/self/status") if line[:7] == "CapEff:"][0]
print("step log line: probing done", flush=True)
json.dump({"output": report}, open(os.environ["KWF_RESULT"], "w"))
"""


def step_job(name: str, image: str, args: list[str]) -> dict[str, Any]:
    """A batch/v1 Job with the isolation kwf gives every step pod."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 120,
            "template": {
                "metadata": {"labels": {"kwf.dev/step": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "step",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "command": ["python3", "-c", PROBE, *args],
                            "env": [{"name": "KWF_RESULT", "value": RESULT_PATH}],
                            "terminationMessagePath": RESULT_PATH,
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "resources": {
                                "requests": {"cpu": "50m", "memory": "64Mi"},
                                "limits": {"cpu": "500m", "memory": "128Mi"},
                            },
                        }
                    ],
                },
            },
        },
    }


def watch(
    cluster: Kube, args: list[str], until: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    """Follow `kubectl get --watch` until an object satisfies `until`; that object."""
    command = [str(cluster.kubectl_path), "get", *args, "--watch", "--output=json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=cluster.env())
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    decoder, buffer = json.JSONDecoder(), ""
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                continue
            chunk = os.read(process.stdout.fileno(), 65536)
            assert chunk, f"kubectl {' '.join(args)} --watch ended early"
            buffer += chunk.decode()
            while buffer.strip():
                try:
                    found, end = decoder.raw_decode(buffer.lstrip())
                except json.JSONDecodeError:
                    break  # an object split across reads
                buffer = buffer.lstrip()[end:]
                if until(found):
                    return found  # type: ignore[no-any-return]
        raise AssertionError(f"nothing in `kubectl get {' '.join(args)}` matched within {timeout}s")
    finally:
        process.kill()
        process.wait()


def terminated(pod: dict[str, Any]) -> bool:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return bool(statuses) and "terminated" in statuses[0].get("state", {})


def complete(job: dict[str, Any]) -> bool:
    conditions = job.get("status", {}).get("conditions") or []
    return any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions)


@pytest.fixture(scope="module")
def host_server(host_address: str) -> Iterator[int]:
    """A TCP server on the host address pods can reach; greets each connection (bounded)."""
    server = socket.create_server((host_address, 0))
    server.settimeout(0.5)
    stop = threading.Event()

    def serve() -> None:
        deadline = time.monotonic() + 300
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(GREETING)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


@pytest.fixture(scope="module")
def step_run(
    cluster: Kube, runner_image: str, host_address: str, host_server: int
) -> Iterator[dict[str, Any]]:
    """Run the probing step once; what it reported, its pod and Job, and how long it took."""
    namespace = cluster.create_namespace("e2e-pods")
    try:
        job = step_job("probe", runner_image, [host_address, str(host_server)])
        created = time.monotonic()
        cluster.apply(job, namespace)
        applied = time.monotonic()
        pod = watch(cluster, ["pods", "-n", namespace, "-l", "job-name=probe"], terminated, timeout=120)
        pod_done = time.monotonic()
        finished = watch(cluster, ["job", "probe", "-n", namespace], complete, timeout=60)
        job_done = time.monotonic()
        print(
            f"\nstep pod timing: create call {applied - created:.2f}s; "
            f"create -> container terminated {pod_done - created:.2f}s; "
            f"create -> Job Complete {job_done - created:.2f}s"
        )
        yield {"namespace": namespace, "pod": pod, "job": finished}
    finally:
        cluster.delete_namespace(namespace)


def _state(run: dict[str, Any]) -> dict[str, Any]:
    return run["pod"]["status"]["containerStatuses"][0]["state"]["terminated"]  # type: ignore[no-any-return]


def _report(run: dict[str, Any]) -> dict[str, Any]:
    return json.loads(_state(run)["message"])["output"]  # type: ignore[no-any-return]


def test_step_job_completes(step_run: dict[str, Any]) -> None:
    assert _state(step_run)["exitCode"] == 0, _state(step_run)
    conditions = {c["type"]: c["status"] for c in step_run["job"]["status"]["conditions"]}
    assert conditions.get("Complete") == "True", conditions


def test_termination_message_carries_the_result(step_run: dict[str, Any]) -> None:
    report = _report(step_run)
    assert (report["uid"], report["gid"]) == (65532, 65532)


def test_logs_of_the_step_pod(cluster: Kube, step_run: dict[str, Any]) -> None:
    # Through the API server to the kubelet: its client certificate and the node address.
    pod = step_run["pod"]["metadata"]["name"]
    logs = cluster.kubectl("logs", pod, "-n", step_run["namespace"])
    assert "step log line: probing done" in logs


def test_root_filesystem_is_read_only(step_run: dict[str, Any]) -> None:
    assert _report(step_run)["root_write"] == "failed: Read-only file system"


def test_no_capabilities_and_no_token(step_run: dict[str, Any]) -> None:
    report = _report(step_run)
    assert int(report["capabilities"], 16) == 0
    assert report["token_mounted"] is False


def test_api_server_is_unreachable_from_the_pod(step_run: dict[str, Any]) -> None:
    report = _report(step_run)
    assert report["api_on_host"].startswith("failed:"), report
    assert report["api_service"].startswith("failed:") or report["api_service"] == "no service env", report


def test_pod_reaches_a_server_on_the_host_address(step_run: dict[str, Any]) -> None:
    assert _report(step_run)["host_server"] == "answered: " + GREETING.decode()
