"""The REST operations of docs/rest.md, done with a plain HTTP client against the
real API server: what a REST workflow service offers, on Kubernetes paths."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from kwf.k8s.api import load_kubeconfig
from tests.support.runs import run_body, script

JSON = Any
BASE = "/apis/workflow.kwf.dev/v1alpha1/namespaces/{namespace}/jobs"


@pytest.fixture
def http(kubeconfig: Path) -> Iterator[httpx2.Client]:
    """An HTTP client with the kubeconfig's server, CA and client certificate."""
    config = load_kubeconfig(kubeconfig)
    headers = {"Accept": "application/json"}
    if config.token:
        headers["Authorization"] = f"Bearer {config.token}"
    with httpx2.Client(base_url=config.server, verify=config.ssl_context, headers=headers) as client:
        yield client


def submit(http: httpx2.Client, namespace: str, name: str) -> httpx2.Response:
    body = run_body(name, [script("fetch", "print(1)")], params={"repo": "nolar/kopf"})
    return http.post(BASE.format(namespace=namespace), json=body)


def test_submit_answers_201_and_the_run_lives_at_its_path(http: httpx2.Client, namespace: str) -> None:
    collection = BASE.format(namespace=namespace)
    created = submit(http, namespace, "rest-1")
    assert created.status_code == 201, created.text
    # Kubernetes sends no Location header: the object's path is the collection
    # path plus metadata.name, which is what a REST client would follow.
    assert "location" not in created.headers
    body = created.json()
    location = f"{collection}/{body['metadata']['name']}"
    read = http.get(location)
    assert read.status_code == 200
    assert read.json()["metadata"]["uid"] == body["metadata"]["uid"]
    assert read.json()["spec"]["params"] == {"repo": "nolar/kopf"}
    # The same name again: 409 AlreadyExists, the run is not replaced.
    again = submit(http, namespace, "rest-1")
    assert again.status_code == 409 and again.json()["reason"] == "AlreadyExists"


def test_generate_name_gives_a_fresh_name_per_submit(http: httpx2.Client, namespace: str) -> None:
    body = run_body("", [script("fetch", "print(1)")])
    body["metadata"] = {"generateName": "digest-"}
    names = set()
    for _ in range(2):
        created = http.post(BASE.format(namespace=namespace), json=body)
        assert created.status_code == 201, created.text
        names.add(created.json()["metadata"]["name"])
    assert len(names) == 2 and all(name.startswith("digest-") for name in names)


def test_a_missing_run_is_404(http: httpx2.Client, namespace: str) -> None:
    missing = http.get(f"{BASE.format(namespace=namespace)}/nosuch")
    assert missing.status_code == 404
    status = missing.json()
    assert (status["kind"], status["reason"]) == ("Status", "NotFound")
    assert status["details"]["name"] == "nosuch"


def test_progress_is_read_from_the_status_subresource(http: httpx2.Client, namespace: str) -> None:
    assert submit(http, namespace, "rest-2").status_code == 201
    path = f"{BASE.format(namespace=namespace)}/rest-2/status"
    progress = {"phase": "Running", "progress": "1/3", "steps": [{"name": "fetch", "phase": "Succeeded"}]}
    written = http.patch(
        path,
        json={"status": progress},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert written.status_code == 200, written.text
    read = http.get(path)
    assert read.status_code == 200
    assert read.json()["status"]["progress"] == "1/3"
    assert read.json()["status"]["steps"][0]["phase"] == "Succeeded"
    # The main resource ignores status changes: status moves only through /status.
    ignored = http.patch(
        f"{BASE.format(namespace=namespace)}/rest-2",
        json={"status": {"phase": "Failed"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert ignored.status_code == 200
    assert ignored.json()["status"]["phase"] == "Running"


def test_shared_state_is_replaced_with_a_resource_version_check(http: httpx2.Client, namespace: str) -> None:
    assert submit(http, namespace, "rest-3").status_code == 201
    path = f"{BASE.format(namespace=namespace)}/rest-3/status"
    current = http.get(path).json()
    stale_version = current["metadata"]["resourceVersion"]

    # Replace (PUT) the status with the version we read: 200.
    current["status"] = {**(current.get("status") or {}), "sharedState": {"counter": 1}}
    replaced = http.put(path, json=current)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["status"]["sharedState"] == {"counter": 1}

    # The same version again is now stale: 409 Conflict, nothing written.
    current["status"]["sharedState"] = {"counter": 99}
    conflict = http.put(path, json=current)
    assert conflict.status_code == 409
    assert conflict.json()["reason"] == "Conflict"
    assert http.get(path).json()["status"]["sharedState"] == {"counter": 1}

    # A merge patch touches only the keys it names; with a stale version, 409 too.
    merge = {"Content-Type": "application/merge-patch+json"}
    stale_patch = {"metadata": {"resourceVersion": stale_version}, "status": {"sharedState": {"n": 1}}}
    assert http.patch(path, json=stale_patch, headers=merge).status_code == 409
    fresh = http.get(path).json()["metadata"]["resourceVersion"]
    patch = {"metadata": {"resourceVersion": fresh}, "status": {"sharedState": {"note": "hi"}}}
    patched = http.patch(path, json=patch, headers=merge)
    assert patched.status_code == 200
    assert patched.json()["status"]["sharedState"] == {"counter": 1, "note": "hi"}
