"""What the chart puts around the operator and the steps on a shared cluster:
NetworkPolicies for the operator pod and for step pods in every watched
namespace, the refusal of inline steps on the node's network, and an image
allowlist as a ValidatingAdmissionPolicy that the real API server enforces.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.chart import CI_VALUES, Manifest, find, ok, refusal, render, run
from tests.support.tools import tool

OPERATOR_POLICY = (
    "--set",
    "operator.networkPolicy.enabled=true",
    "--set",
    "operator.networkPolicy.apiServerCIDRs={10.0.0.10/32}",
)


@pytest.fixture(scope="session")
def helm() -> Path:
    return tool("helm")


# ------------------------------------------------------- hostNetwork, inline


def test_inline_steps_on_the_nodes_network_are_refused(helm: Path) -> None:
    both = ("--set", "operator.hostNetwork=true", "--set", "operator.inline.enabled=true")
    # The schema refuses the pair, naming the value that must change ...
    assert "/operator/inline/enabled" in refusal(helm, *both)
    # ... and where the schema is skipped, the chart says why.
    message = refusal(helm, *both, "--skip-schema-validation")
    assert "operator.hostNetwork and operator.inline.enabled cannot both be true" in message
    assert "node's network" in message
    # Each alone is fine.
    render(helm, "kwf-system", "--set", "operator.hostNetwork=true")
    render(helm, "kwf-system", "--set", "operator.inline.enabled=true")


# ------------------------------------------------------------ step pods


def step_policies(manifests: list[Manifest]) -> dict[str, Manifest]:
    return {
        p["metadata"]["namespace"]: p
        for p in find(manifests, "NetworkPolicy")
        if p["metadata"]["labels"]["app.kubernetes.io/component"] == "step"
    }


def test_the_step_pod_policy_is_in_every_watched_namespace(helm: Path) -> None:
    on = ("--set", "networkPolicy.enabled=true")
    listed = render(helm, "kwf-system", *on, "--set", "watchNamespaces={team-a,team-b,team-c}")
    assert step_policies(listed).keys() == {"team-a", "team-b", "team-c"}
    # rbac.scope=namespaces with no list watches the release namespace alone.
    alone = render(helm, "kwf-system", *on, "--set", "rbac.scope=namespaces")
    assert step_policies(alone).keys() == {"kwf-system"}
    args = " ".join(
        a for a in find(alone, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    assert "--namespace=kwf-system" in args


def test_the_step_pod_policy_with_every_namespace_watched_fails_the_install_saying_why(helm: Path) -> None:
    """Before, the policy went into the release namespace only, while steps ran
    unconfined everywhere else."""
    message = refusal(helm, "--set", "networkPolicy.enabled=true")
    assert "networkPolicy.enabled with every namespace watched" in message
    assert "watchNamespaces" in message


# ------------------------------------------------------------- operator


def operator_policy(manifests: list[Manifest]) -> Manifest:
    (policy,) = [p for p in find(manifests, "NetworkPolicy") if p["metadata"]["name"].endswith("-operator")]
    return policy


def blocks(rule: Manifest) -> list[Manifest]:
    return [peer["ipBlock"] for peer in rule.get("to", []) if "ipBlock" in peer]


def test_the_operator_pod_policy_admits_its_ports_and_reaches_dns_and_the_api_server(helm: Path) -> None:
    manifests = render(helm, "kwf-system", *OPERATOR_POLICY, "--set", "metrics.port=9464")
    policy = operator_policy(manifests)
    (deployment,) = find(manifests, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    ingress, webhook = policy["spec"]["ingress"]
    assert sorted(p["port"] for p in ingress["ports"]) == [8080, 9464]
    assert "from" not in ingress
    assert webhook == {"ports": [{"port": 9443, "protocol": "TCP"}]}  # the API server calls the webhook
    dns, api_server = policy["spec"]["egress"]
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert {p["port"] for p in dns["ports"]} == {53}
    assert blocks(api_server) == [{"cidr": "10.0.0.10/32"}]
    assert sorted(p["port"] for p in api_server["ports"]) == [443, 6443]


def test_with_inline_steps_the_operator_reaches_out_but_not_into_refused_ranges(helm: Path) -> None:
    manifests = render(helm, "kwf-system", "-f", CI_VALUES / "locked-down-values.yaml")
    _, _, outside, allowed = operator_policy(manifests)["spec"]["egress"]
    v4, v6 = blocks(outside)
    assert v4 == {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16", "10.244.0.0/16", "10.96.0.0/12"]}
    assert v6 == {"cidr": "::/0", "except": ["fe80::/10", "fd00:10:96::/112"]}
    assert "ports" not in outside
    assert blocks(allowed) == [{"cidr": "10.96.0.53/32"}]
    # The same ranges reach the operator, which checks each address after DNS.
    args = find(manifests, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--inline-")] == [
        "--inline-concurrency=32",
        "--inline-service-account=kwf-inline",
        "--inline-deny-cidr=10.244.0.0/16",
        "--inline-deny-cidr=10.96.0.0/12",
        "--inline-deny-cidr=fd00:10:96::/112",
        "--inline-allow-cidr=10.96.0.53/32",
        "--inline-allow-host=llm.internal.example",
    ]
    # Without inline steps the operator reaches DNS and the API server only.
    assert len(operator_policy(render(helm, "kwf-system", *OPERATOR_POLICY))["spec"]["egress"]) == 2


def test_the_operator_pod_policy_needs_the_api_servers_address_and_the_pod_network(helm: Path) -> None:
    message = refusal(helm, "--set", "operator.networkPolicy.enabled=true")
    assert "operator.networkPolicy.apiServerCIDRs is empty" in message
    assert "kubectl get endpointslices" in message
    message = refusal(helm, *OPERATOR_POLICY, "--set", "operator.hostNetwork=true")
    assert "no NetworkPolicy applies to a pod on the node's network" in message


# --------------------------------------------------------- image allowlist


def image_policy_objects(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if m["kind"].startswith("ValidatingAdmissionPolicy")]


def test_the_image_allowlist_is_bound_to_the_watched_namespaces(helm: Path) -> None:
    assert image_policy_objects(render(helm, "kwf-system")) == []
    manifests = render(helm, "kwf-system", "-f", CI_VALUES / "locked-down-values.yaml")
    bindings = find(manifests, "ValidatingAdmissionPolicyBinding")
    policies = {p["metadata"]["name"] for p in find(manifests, "ValidatingAdmissionPolicy")}
    assert {b["spec"]["policyName"] for b in bindings} == policies == {"kwf-pod-images", "kwf-step-images"}
    for binding in bindings:
        assert binding["spec"]["validationActions"] == ["Deny"]
        (match,) = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
        assert match == {
            "key": "kubernetes.io/metadata.name",
            "operator": "In",
            "values": ["kwf-chart-a", "kwf-chart-b"],
        }
    # Every namespace watched: only with a selector of the namespaces meant.
    message = refusal(helm, "--set", "imagePolicy.enabled=true")
    assert "imagePolicy.namespaceSelector is empty" in message
    chosen = render(
        helm,
        "kwf-system",
        "--set",
        "imagePolicy.enabled=true",
        "--set",
        "imagePolicy.namespaceSelector.matchLabels.kwf=on",
    )
    for binding in find(chosen, "ValidatingAdmissionPolicyBinding"):
        assert binding["spec"]["matchResources"]["namespaceSelector"] == {"matchLabels": {"kwf": "on"}}


def container(name: str, image: str) -> Manifest:
    return {"name": name, "image": image}


def pod(name: str, *images: str, init: str | None = None) -> Manifest:
    spec: Manifest = {"containers": [container(f"c{i}", image) for i, image in enumerate(images)]}
    if init:
        spec["initContainers"] = [container("init", init)]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def batch_job(name: str, image: str) -> Manifest:
    template = {"spec": {"restartPolicy": "Never", "containers": [container("main", image)]}}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": template},
    }


def container_step(name: str, image: str) -> Manifest:
    return {"name": name, "container": {"image": image, "command": ["true"]}}


def kwf_object(kind: str, name: str, *steps: Manifest) -> Manifest:
    return {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {"steps": list(steps)},
    }


ALLOWED = "registry.example.test/team/tool:1.0"
REFUSED = "docker.io/someone/miner:latest"


class Allowlist:
    """The chart's image allowlist for real, bound to one namespace only."""

    def __init__(self, helm: Path, kubectl_path: Path, kubeconfig: Path, namespace: str) -> None:
        self.namespace = namespace
        self.kubectl: list[str | Path] = [kubectl_path, f"--kubeconfig={kubeconfig}"]
        release = f"img-{namespace}"[:40].rstrip("-")
        values = (
            "--set", f"watchNamespaces={{{namespace}}}",
            "--set", "imagePolicy.enabled=true",
            "--set", "imagePolicy.allowedPrefixes={registry.example.test/}",
        )  # fmt: skip
        objects = image_policy_objects(render(helm, namespace, *values, release=release))
        assert len(objects) == 4
        self.body = {"apiVersion": "v1", "kind": "List", "items": objects}
        self.installed = False

    def install(self) -> None:
        ok(run(*self.kubectl, "apply", "-f", "-", body=self.body))
        self.installed = True
        # A new policy takes a moment to reach the API server's admission chain.
        deadline = time.monotonic() + 60
        while "is not allowed here" not in (result := self.create(batch_job("probe", REFUSED))).stderr:
            assert time.monotonic() < deadline, f"the policy never took effect: {result.stderr}"
            time.sleep(0.5)

    def uninstall(self) -> None:
        if self.installed:
            run(*self.kubectl, "delete", "--ignore-not-found", "-f", "-", body=self.body)

    def create(self, obj: Manifest, *, dry_run: bool = True) -> subprocess.CompletedProcess[str]:
        """Create ``obj`` (a server-side dry run unless told): kubectl's result."""
        where = obj["metadata"].get("namespace", self.namespace)
        flags = ["--dry-run=server"] if dry_run else []
        return run(*self.kubectl, "create", "-n", where, *flags, "-f", "-", body=obj)

    def patch(self, obj: Manifest, kind: str, patch: Any) -> subprocess.CompletedProcess[str]:
        name = obj["metadata"]["name"]
        return run(
            *self.kubectl, "patch", obj["kind"].lower() + "s." + obj["apiVersion"].split("/")[0], name,
            "-n", self.namespace, f"--type={kind}", "-p", json.dumps(patch),
        )  # fmt: skip


@pytest.fixture
def allowlist(helm: Path, kubectl_path: Path, kubeconfig: Path, namespace: str) -> Iterator[Allowlist]:
    policy = Allowlist(helm, kubectl_path, kubeconfig, namespace)
    try:
        yield policy
    finally:
        policy.uninstall()


def test_the_api_server_refuses_images_outside_the_allowlist(
    allowlist: Allowlist, make_namespace: Callable[[], str]
) -> None:
    allowlist.install()
    create = allowlist.create
    message = create(batch_job("miner", REFUSED)).stderr
    assert f"spec.template.spec: image {REFUSED} is not allowed here" in message
    assert "registry.example.test/" in message

    # Pods too, every kind of container of them.
    assert "spec: image" in create(pod("p1", ALLOWED, REFUSED)).stderr
    assert create(pod("p2", ALLOWED, init=REFUSED)).returncode != 0
    # A prefix is a prefix: the runner's repository is allowed, a namesake is not.
    assert create(batch_job("lookalike", "kwf.local/runner-evil:1")).returncode != 0

    # kwf Jobs and Workflows, by their steps' images.
    refused = create(
        kwf_object("Job", "steps", container_step("ok", ALLOWED), container_step("bad", REFUSED))
    )
    assert refused.returncode != 0 and f"spec.steps: image {REFUSED} is not allowed here" in refused.stderr
    script = {"name": "s", "script": {"language": "shell", "source": "true", "image": REFUSED}}
    assert create(kwf_object("Workflow", "wf", script)).returncode != 0

    # What the list allows passes, and so do kwf's own images.
    for obj in (
        batch_job("tool", ALLOWED),
        batch_job("runner", "kwf.local/runner:0.1.0"),
        pod("p3", ALLOWED, init="kwf.local/runner@sha256:" + "0" * 64),
        kwf_object("Job", "fine", container_step("ok", ALLOWED), {"name": "s", "script": {"source": "pass"}}),
    ):
        result = create(obj)
        assert result.returncode == 0, f"{obj['metadata']['name']}: {result.stderr}"

    # Outside the watched namespaces, the policy does not hold.
    outside = batch_job("miner", REFUSED)
    outside["metadata"]["namespace"] = make_namespace()
    assert create(outside).returncode == 0


def test_an_update_keeps_images_the_object_had_and_refuses_new_ones(allowlist: Allowlist) -> None:
    """Tightening the list never wedges what exists: a run created before it
    can still be changed (cancelled), but gains no refused image."""
    old = kwf_object("Job", "old-run", container_step("old", REFUSED))
    ok(allowlist.create(old, dry_run=False))
    allowlist.install()
    cancelled = allowlist.patch(old, "merge", {"spec": {"cancel": True}})
    assert cancelled.returncode == 0, cancelled.stderr
    newer = "docker.io/someone/other:1"
    step = {"op": "add", "path": "/spec/steps/-", "value": container_step("new", newer)}
    added = allowlist.patch(old, "json", [step])
    assert added.returncode != 0 and f"spec.steps: image {newer} is not allowed here" in added.stderr
