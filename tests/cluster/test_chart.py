"""The Helm chart: lint, rendering under each values file in charts/kwf/ci,
every rendered object accepted by the real API server (server-side dry run),
and the standby's Lease rights, asked of the API server's own authorizer.
The operator's RBAC per mode is in test_chart_rbac.py; NetworkPolicies and the
image allowlist in test_chart_policies.py.

helm is built from its Go module by `make tools` (cached in .tools/bin).
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from kwf.k8s.manifests import LABEL_STEP
from tests.support.chart import (
    CHART,
    REPO,
    can_i,
    chart_namespaces,  # noqa: F401  (a fixture)
    deployment_args,
    find,
    ok,
    render,
    run,
)
from tests.support.tools import tool

VALUES_FILES = sorted((CHART / "ci").glob("*-values.yaml"))


@pytest.fixture(scope="session")
def helm() -> Path:
    return tool("helm")


# ------------------------------------------------------------------ offline


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda p: p.name.removesuffix("-values.yaml"))
def test_lint_strict(helm: Path, values: Path) -> None:
    ok(run(helm, "lint", "--strict", CHART, "-f", values))


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("operatr.logLevel=debug", "operatr"),
        ("rbac.scope=everything", "scope"),
        ("operator.logLevel=loud", "logLevel"),
        ("metrics.port=0", "port"),
        ("watchNamespaces[0]=Not_A_Namespace", "watchNamespaces"),
    ],
)
def test_schema_rejects_bad_values_naming_them(helm: Path, setting: str, named: str) -> None:
    result = run(helm, "template", "kwf", CHART, "--set", setting)
    assert result.returncode != 0
    assert named in result.stderr


def test_cluster_scope_watches_everything_with_one_cluster_role(helm: Path) -> None:
    manifests = render(helm, "kwf-system")
    assert "--all-namespaces" in deployment_args(manifests)
    assert [m["metadata"]["name"] for m in find(manifests, "ClusterRole")] == ["kwf"]
    assert find(manifests, "Role") == []
    (deployment,) = find(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_namespaced_scope_grants_nothing_cluster_wide(helm: Path) -> None:
    manifests = render(helm, "kwf-system", "-f", str(CHART / "ci" / "namespaced-values.yaml"))
    assert find(manifests, "ClusterRole") == find(manifests, "ClusterRoleBinding") == []
    roles = {m["metadata"]["namespace"] for m in find(manifests, "Role")}
    assert roles == {"kwf-chart-a", "kwf-chart-b"}
    args = deployment_args(manifests)
    assert "--namespace=kwf-chart-a" in args and "--namespace=kwf-chart-b" in args
    assert "--all-namespaces" not in args
    step_accounts = {m["metadata"]["namespace"]: m for m in find(manifests, "ServiceAccount")}
    assert step_accounts["kwf-chart-a"]["automountServiceAccountToken"] is False


def test_crds_are_the_generated_ones_kept_on_uninstall(helm: Path) -> None:
    rendered = {
        m["metadata"]["name"]: m for m in find(render(helm, "kwf-system"), "CustomResourceDefinition")
    }
    generated = {}
    for path in sorted((REPO / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                generated[doc["metadata"]["name"]] = doc
    assert rendered.keys() == generated.keys()
    for name, crd in rendered.items():
        meta = crd["metadata"]
        assert meta["annotations"]["helm.sh/resource-policy"] == "keep"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert crd["spec"] == generated[name]["spec"], f"{name}: the chart's CRD differs from crds/"


def test_no_crds_when_asked(helm: Path) -> None:
    manifests = render(helm, "kwf-system", "--set", "crds.install=false")
    assert find(manifests, "CustomResourceDefinition") == []


def test_service_monitor_only_where_the_prometheus_operator_is(helm: Path) -> None:
    assert find(render(helm, "kwf-system"), "ServiceMonitor") == []
    manifests = render(helm, "kwf-system", "--api-versions", "monitoring.coreos.com/v1")
    (monitor,) = find(manifests, "ServiceMonitor")
    (service,) = [s for s in find(manifests, "Service") if s["metadata"]["name"] == "kwf-metrics"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def test_network_policy_selects_the_pods_the_operator_labels_as_steps(helm: Path) -> None:
    manifests = render(helm, "kwf-system", "-f", str(CHART / "ci" / "networkpolicy-values.yaml"))
    policies = find(manifests, "NetworkPolicy")
    assert {p["metadata"]["namespace"] for p in policies} == {"kwf-chart-a", "kwf-chart-b"}
    for policy in policies:
        assert policy["spec"]["podSelector"]["matchExpressions"] == [
            {"key": LABEL_STEP, "operator": "Exists"}
        ]
        assert policy["spec"]["ingress"] == []
        cidrs = [rule["to"][0].get("ipBlock", {}).get("cidr") for rule in policy["spec"]["egress"]]
        assert cidrs == [None, "10.213.0.0/24", "192.0.2.0/24"]


def test_the_operator_pod_is_locked_down(helm: Path) -> None:
    (deployment,) = find(render(helm, "kwf-system"), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert "--inline" not in container["args"]


# ------------------------------------------------------ on the API server


@pytest.mark.usefixtures("cluster", "chart_namespaces")
@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda p: p.name.removesuffix("-values.yaml"))
def test_every_rendered_object_passes_a_server_side_dry_run(
    helm: Path, kubectl_path: Path, kubeconfig: Path, namespace: str, values: Path
) -> None:
    manifests = render(helm, namespace, "-f", str(values))
    assert manifests
    body = {"apiVersion": "v1", "kind": "List", "items": manifests}
    out = ok(
        run(
            kubectl_path,
            f"--kubeconfig={kubeconfig}",
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=kwf-chart-test",
            "--dry-run=server",
            "-f",
            "-",
            "-o",
            "json",
            body=body,
        )
    )
    accepted = json.loads(out)
    kinds = sorted(item["kind"] for item in accepted.get("items", [accepted]))
    assert kinds == sorted(m["kind"] for m in manifests)


def test_standby_runs_two_replicas_electing_a_leader_on_a_lease(helm: Path) -> None:
    manifests = render(helm, "kwf-system", "-f", str(CHART / "ci" / "standby-values.yaml"), release="ha")
    (deployment,) = find(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    args = deployment_args(manifests)
    assert "--leader-election" in args and "--leader-election-name=ha-kwf" in args
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # kopf runs standalone: nothing of its peering is left.
    assert "kopf.dev" not in json.dumps(manifests)
    assert "KWF_PEERING" not in env
    (role,) = [m for m in find(manifests, "Role") if m["metadata"]["name"] == "ha-kwf-leader-election"]
    assert role["metadata"]["namespace"] == "kwf-system"
    assert {verb for rule in role["rules"] for verb in rule["verbs"]} == {"create", "get", "update"}
    assert "--leader-election" not in deployment_args(render(helm, "kwf-system"))
    assert not [m for m in find(render(helm, "kwf-system"), "Role") if "leader" in m["metadata"]["name"]]


def test_step_pods_get_the_step_account_only_where_it_exists(helm: Path) -> None:
    """The account is created in each watched namespace; watching every
    namespace, it exists only in the release namespace, so it is not named."""

    def env(*args: str) -> dict[str, str]:
        (deployment,) = find(render(helm, "kwf-system", *args), "Deployment")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("value") for e in container["env"]}

    assert "KWF_STEP_SERVICE_ACCOUNT" not in env()
    listed = env("-f", str(CHART / "ci" / "namespaced-values.yaml"))
    assert listed["KWF_STEP_SERVICE_ACCOUNT"] == "kwf-step"
    assert listed["KWF_RUNNER_PULL_POLICY"] == "IfNotPresent"
    assert "KWF_STEP_SERVICE_ACCOUNT" not in env(
        "--set", "watchNamespaces={a}", "--set", "stepServiceAccount.create=false"
    )


def test_standby_install_may_hold_its_lease_and_nothing_more(
    helm: Path, kubectl_path: Path, kubeconfig: Path, namespace: str, make_namespace: Callable[[], str]
) -> None:
    """A real `helm install` of the standby values; the Role is asked of the
    API server's authorizer. The image is one that cannot start, so that no
    operator runs even where a node exists."""
    release = f"standby-{namespace}"[:40].rstrip("-")
    fullname = f"{release}-kwf"[:63]
    elsewhere = make_namespace()

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return run(kubectl_path, f"--kubeconfig={kubeconfig}", *args)

    def helm_in(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return run(helm, f"--kubeconfig={kubeconfig}", "--namespace", namespace, *args)

    installed = helm_in(
        "install", release, CHART, "-f", CHART / "ci" / "standby-values.yaml",
        "--set", "operator.image.repository=kwf.local/absent", "--set", "operator.image.pullPolicy=Never",
        "--take-ownership", "--force-conflicts", "--timeout=2m",
    )  # fmt: skip
    try:
        ok(installed)
        deployment = json.loads(ok(kubectl("get", "deployment", fullname, "-n", namespace, "-o", "json")))
        assert deployment["spec"]["replicas"] == 2
        who = f"system:serviceaccount:{namespace}:{fullname}"
        lease = f"leases.coordination.k8s.io/{fullname}"
        for verb, what in [("create", "leases.coordination.k8s.io"), ("get", lease), ("update", lease)]:
            assert can_i(kubectl_path, kubeconfig, who, verb, what, namespace), f"{verb} {what}"
        for verb, what, where in [
            ("delete", lease, namespace),
            ("update", "leases.coordination.k8s.io/someone-elses", namespace),
            ("list", "leases.coordination.k8s.io", namespace),
            ("create", "leases.coordination.k8s.io", elsewhere),
            ("get", lease, elsewhere),
        ]:
            assert not can_i(kubectl_path, kubeconfig, who, verb, what, where), f"{verb} {what} in {where}"

        ok(helm_in("uninstall", release, "--wait", "--timeout=2m"))
        assert kubectl("get", "deployment", fullname, "-n", namespace).returncode != 0
        assert kubectl("get", "role", f"{fullname}-leader-election", "-n", namespace).returncode != 0
        assert kubectl("get", "clusterrole", fullname).returncode != 0
        for crd in ("jobs.workflow.kwf.dev", "workflows.workflow.kwf.dev"):
            ok(kubectl("get", "crd", crd))
    finally:
        helm_in("uninstall", release, "--timeout=2m")


def test_the_run_in_notes_is_a_valid_job(
    helm: Path, kubectl_path: Path, kubeconfig: Path, namespace: str
) -> None:
    out = ok(run(helm, "install", "kwf", CHART, "--dry-run=client", "--namespace", namespace))
    notes = out.split("NOTES:", 1)[1]
    assert f"kubectl get jobs.workflow -n {namespace}" in notes
    heredoc = notes.split("<<'YAML'", 1)[1].split("\n", 1)[1].split("\n  YAML\n", 1)[0]
    job = yaml.safe_load(textwrap.dedent(heredoc))
    kubectl: list[str | Path] = [kubectl_path, f"--kubeconfig={kubeconfig}"]
    ok(run(*kubectl, "create", "--dry-run=server", "-n", namespace, "-f", "-", body=job))


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda p: p.name.removesuffix("-values.yaml"))
def test_the_operator_command_accepts_the_rendered_arguments(
    helm: Path, values: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image runs `kwf operator ARGS` with the container's environment:
    every flag and variable the chart passes must be one the CLI accepts."""
    import typer

    from kwf.cli import app

    manifests = render(helm, "kwf-system", "-f", str(values))
    args = deployment_args(manifests)
    (deployment,) = find(manifests, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    plain = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    for name in (
        "KWF_RUNNER_PULL_POLICY",
        "KWF_STEP_SERVICE_ACCOUNT",
        "KWF_LEADER_ELECTION",
        "KWF_INLINE_SERVICE_ACCOUNT",
        "POD_NAMESPACE",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in plain.items():
        monkeypatch.setenv(name, value)
    command = typer.main.get_command(app).commands["operator"]  # type: ignore[attr-defined]
    with command.make_context("operator", list(args)) as context:
        assert context.params["inline"] == ("--inline" in args)
        assert context.params["leader_election"] == ("--leader-election" in args)
        assert context.params["runner_pull_policy"] == plain["KWF_RUNNER_PULL_POLICY"]
        assert context.params["step_service_account"] == plain.get("KWF_STEP_SERVICE_ACCOUNT")
        inline = yaml.safe_load(values.read_text()).get("operator", {}).get("inline", {})
        if inline.get("enabled"):
            assert context.params["inline_service_account"] == inline.get("serviceAccountName", "kwf-inline")
            assert list(context.params["inline_deny_cidr"] or ()) == inline.get("denyCIDRs", [])
            assert list(context.params["inline_allow_cidr"] or ()) == inline.get("allowCIDRs", [])
            assert list(context.params["inline_allow_host"] or ()) == inline.get("allowHosts", [])
