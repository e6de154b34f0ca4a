"""The Helm chart as the tests see it: rendered by the real helm (built by
`make tools`), and RBAC asked of the API server's own authorizer."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kwf"
CI_VALUES = CHART / "ci"
Manifest = dict[str, Any]


def run(*argv: str | Path, body: Any = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        input=json.dumps(body) if body is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def render(helm: Path, namespace: str, *args: str | Path, release: str = "kwf") -> list[Manifest]:
    out = ok(run(helm, "template", release, CHART, "--namespace", namespace, *args))
    return [doc for doc in yaml.safe_load_all(out) if doc]


def refusal(helm: Path, *args: str | Path) -> str:
    """What helm says when it refuses to render (the test fails if it renders)."""
    result = run(helm, "template", "kwf", CHART, "--namespace", "kwf-system", *args)
    assert result.returncode != 0, f"rendered although it should not:\n{result.stdout[:2000]}"
    return " ".join(result.stderr.split())


def find(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def deployment_args(manifests: list[Manifest]) -> list[str]:
    (deployment,) = find(manifests, "Deployment")
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def can_i(
    kubectl_path: Path, kubeconfig: Path, who: str, verb: str, resource: str, namespace: str | None
) -> bool:
    """``kubectl auth can-i``: a SubjectAccessReview of ``who``, answered by the
    API server's authorizer. ``namespace`` None asks across all namespaces."""
    where = ["-n", namespace] if namespace is not None else ["--all-namespaces"]
    result = run(
        kubectl_path, f"--kubeconfig={kubeconfig}", "auth", "can-i", verb, resource, *where, f"--as={who}"
    )
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


def ensure_namespace(kubectl_path: Path, kubeconfig: Path, name: str) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    ok(run(kubectl_path, f"--kubeconfig={kubeconfig}", "apply", "-f", "-", body=body))


#: The namespaces the values files in charts/kwf/ci name.
CHART_NAMESPACES = ["kwf-chart-a", "kwf-chart-b"]


@pytest.fixture
def chart_namespaces(kubectl_path: Path, kubeconfig: Path) -> list[str]:
    for name in CHART_NAMESPACES:
        ensure_namespace(kubectl_path, kubeconfig, name)
    return CHART_NAMESPACES
