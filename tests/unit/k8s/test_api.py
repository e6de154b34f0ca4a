"""The client's pure parts: paths of group-qualified resources, error types, kubeconfig."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import httpx2
import pytest
import yaml

from kwf.k8s.api import (
    BATCH_JOBS,
    KWF_JOBS,
    NAMESPACES,
    PODS,
    SECRETS,
    AlreadyExists,
    Conflict,
    Gone,
    Invalid,
    NotFound,
    _error,
    load_kubeconfig,
)


def test_jobs_of_kwf_and_of_batch_have_different_paths() -> None:
    assert (
        KWF_JOBS.path("ns", "run", "status")
        == "/apis/workflow.kwf.dev/v1alpha1/namespaces/ns/jobs/run/status"
    )
    assert BATCH_JOBS.path("ns") == "/apis/batch/v1/namespaces/ns/jobs"
    assert KWF_JOBS.path() == "/apis/workflow.kwf.dev/v1alpha1/jobs"  # every namespace
    assert PODS.path("ns", "p", "log") == "/api/v1/namespaces/ns/pods/p/log"
    assert NAMESPACES.path("ignored", "kwf") == "/api/v1/namespaces/kwf"


@pytest.mark.parametrize(
    ("namespace", "name", "subresource"),
    [
        ("team", "../../kube-system/secrets/x", None),
        ("team", "x/../../../namespaces/kube-system/secrets/y", None),
        ("../kube-system", "x", None),
        ("team", "x?watch=true#", None),
        ("team", "pod", "../../secrets/x"),
        ("team", "a%2F..%2Fb", None),
    ],
)
def test_every_path_segment_is_escaped_so_no_value_reaches_another_object(
    namespace: str, name: str, subresource: str | None
) -> None:
    path = SECRETS.path(namespace, name, subresource)
    # As the client sends it: the URL the HTTP library builds keeps each value one segment.
    sent = httpx2.AsyncClient(base_url="https://127.0.0.1:6443").build_request("GET", path).url
    segments = sent.raw_path.decode().split("/")
    expected = 7 if subresource is None else 8
    assert len(segments) == expected, sent
    assert segments[:4] == ["", "api", "v1", "namespaces"]
    assert segments[5] == "secrets"
    assert not sent.query and not sent.fragment
    decoded = [urllib.parse.unquote(part) for part in segments[4:]]
    assert decoded == [namespace, "secrets", name, *([subresource] if subresource else [])]


@pytest.mark.parametrize("name", ["", ".", ".."])
def test_a_name_that_would_address_the_collection_or_above_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="cannot name an object"):
        SECRETS.path("team", name)


@pytest.mark.parametrize(
    ("status", "reason", "kind"),
    [
        (404, "NotFound", NotFound),
        (409, "AlreadyExists", AlreadyExists),
        (409, "Conflict", Conflict),
        (410, "Expired", Gone),
        (422, "Invalid", Invalid),
    ],
)
def test_api_statuses_become_typed_errors(status: int, reason: str, kind: type[Exception]) -> None:
    message = 'Job.batch "x" is invalid: spec.template.spec.containers[0].image: Required value'
    error = _error(status, {"kind": "Status", "reason": reason, "message": message, "code": status})
    assert isinstance(error, kind)
    assert error.message == message


def test_kubeconfig_with_a_token(tmp_path: Path) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "ci",
        "contexts": [{"name": "ci", "context": {"cluster": "c", "user": "u", "namespace": "team"}}],
        "clusters": [
            {"name": "c", "cluster": {"server": "https://127.0.0.1:6443/", "insecure-skip-tls-verify": True}}
        ],
        "users": [{"name": "u", "user": {"token": "abc"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    loaded = load_kubeconfig(path)
    assert loaded.server == "https://127.0.0.1:6443"
    assert loaded.token == "abc"
    assert loaded.namespace == "team"


def test_kubeconfig_naming_a_missing_context_says_which(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({"current-context": "gone", "contexts": []}))
    with pytest.raises(ValueError, match="'gone'"):
        load_kubeconfig(path)
