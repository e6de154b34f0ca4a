"""The chart's admission webhook: the ValidatingWebhookConfiguration, its
Service and serving certificate (generated once and kept across upgrades, or
from cert-manager), the operator's flags, port and volume, and the operator
NetworkPolicy letting the API server in. That the API server calls it and
refuses what it refuses is in test_admission.py.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from tests.support.chart import CHART, Manifest, find, ok, refusal, render, run
from tests.support.tools import tool

SECRET_MOUNT = "/etc/kwf/webhook"


@pytest.fixture(scope="session")
def helm() -> Path:
    return tool("helm")


def one(manifests: list[Manifest], kind: str) -> Manifest:
    (found,) = find(manifests, kind)
    return found


def container(manifests: list[Manifest]) -> Manifest:
    (operator,) = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    result: Manifest = operator
    return result


def webhook_service(manifests: list[Manifest]) -> Manifest:
    (service,) = [s for s in find(manifests, "Service") if s["metadata"]["name"].endswith("-webhook")]
    return service


def openssl(*args: str | Path) -> str:
    result = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_on_by_default_for_jobs_and_workflows_and_never_locking_anyone_out(helm: Path) -> None:
    manifests = render(helm, "kwf-system", "--set", "watchNamespaces={team-a,team-b}")
    configuration = one(manifests, "ValidatingWebhookConfiguration")
    (hook,) = configuration["webhooks"]
    assert hook["rules"] == [
        {
            "apiGroups": ["workflow.kwf.dev"],
            "apiVersions": ["*"],
            "resources": ["jobs", "workflows"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        }
    ]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["timeoutSeconds"] == 5
    # Only the watched namespaces.
    assert hook["namespaceSelector"] == {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}
        ]
    }
    # Updates that leave the spec alone (finalizers) never reach it.
    (condition,) = hook["matchConditions"]
    assert "object.spec != oldObject.spec" in condition["expression"]
    assert "request.operation != 'UPDATE'" in condition["expression"]
    # ... and it calls the operator's pods through its Service, on the container's port.
    service = webhook_service(manifests)
    assert hook["clientConfig"]["service"] == {
        "name": service["metadata"]["name"],
        "namespace": "kwf-system",
        "path": "/validate",
        "port": 443,
    }
    assert service["spec"]["ports"] == [
        {"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}
    ]
    labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    operator = container(manifests)
    assert {"name": "webhook", "containerPort": 9443, "protocol": "TCP"} in operator["ports"]
    assert "--webhook-port=9443" in operator["args"]
    assert f"--webhook-cert={SECRET_MOUNT}/tls.crt" in operator["args"]
    assert f"--webhook-key={SECRET_MOUNT}/tls.key" in operator["args"]


def test_every_namespace_watched_uses_the_selector_given(helm: Path) -> None:
    hook = one(render(helm, "kwf-system"), "ValidatingWebhookConfiguration")["webhooks"][0]
    assert hook["namespaceSelector"] == {}
    chosen = render(helm, "kwf-system", "--set", "webhook.namespaceSelector.matchLabels.kwf=on")
    hook = one(chosen, "ValidatingWebhookConfiguration")["webhooks"][0]
    assert hook["namespaceSelector"] == {"matchLabels": {"kwf": "on"}}


def test_the_generated_certificate_is_signed_by_the_ca_bundle_for_the_service(
    helm: Path, tmp_path: Path
) -> None:
    manifests = render(
        helm, "kwf-system", "--set", "webhook.port=8443", "--set", "webhook.failurePolicy=Fail"
    )
    configuration = one(manifests, "ValidatingWebhookConfiguration")
    assert configuration["webhooks"][0]["failurePolicy"] == "Fail"
    (secret,) = [s for s in find(manifests, "Secret") if s["metadata"]["name"] == "kwf-webhook-tls"]
    assert secret["type"] == "kubernetes.io/tls"
    ca, cert = tmp_path / "ca.crt", tmp_path / "tls.crt"
    ca.write_bytes(base64.b64decode(configuration["webhooks"][0]["clientConfig"]["caBundle"]))
    assert base64.b64decode(secret["data"]["ca.crt"]) == ca.read_bytes()
    cert.write_bytes(base64.b64decode(secret["data"]["tls.crt"]))
    assert openssl("verify", "-CAfile", ca, cert).strip().endswith(": OK")
    names = openssl("x509", "-in", cert, "-noout", "-ext", "subjectAltName")
    assert "DNS:kwf-webhook.kwf-system.svc" in names
    # The operator reads the pair from the Secret, on the port asked.
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "webhook-tls", "secret": {"secretName": "kwf-webhook-tls"}} in pod["volumes"]
    mount = {"name": "webhook-tls", "mountPath": SECRET_MOUNT, "readOnly": True}
    assert mount in container(manifests)["volumeMounts"]
    assert "--webhook-port=8443" in container(manifests)["args"]


def test_off_leaves_nothing_of_it(helm: Path) -> None:
    manifests = render(helm, "kwf-system", "--set", "webhook.enabled=false")
    assert find(manifests, "ValidatingWebhookConfiguration") == []
    assert "webhook" not in json.dumps([m["metadata"]["name"] for m in manifests])
    operator = container(manifests)
    assert not [a for a in operator["args"] if a.startswith("--webhook")]
    assert "webhook" not in json.dumps(operator["ports"]) + json.dumps(operator["volumeMounts"])


def test_cert_manager_issues_the_certificate_and_injects_the_ca(helm: Path) -> None:
    manifests = render(
        helm, "kwf-system",
        "--set", "webhook.certManager.enabled=true",
        "--set", "webhook.certManager.issuerRef.name=ca-issuer",
        "--set", "webhook.certManager.issuerRef.kind=ClusterIssuer",
    )  # fmt: skip
    certificate = one(manifests, "Certificate")
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    assert certificate["spec"]["secretName"] == "kwf-webhook-tls"
    assert certificate["spec"]["issuerRef"] == {
        "name": "ca-issuer",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert "kwf-webhook.kwf-system.svc" in certificate["spec"]["dnsNames"]
    assert [s for s in find(manifests, "Secret") if "webhook" in s["metadata"]["name"]] == []
    configuration = one(manifests, "ValidatingWebhookConfiguration")
    assert configuration["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": "kwf-system/kwf-webhook"
    }
    assert "caBundle" not in configuration["webhooks"][0]["clientConfig"]
    message = refusal(helm, "--set", "webhook.certManager.enabled=true")
    assert "webhook.certManager.issuerRef.name is empty" in message


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("webhook.failurePolicy=Sometimes", "failurePolicy"),
        ("webhook.port=0", "port"),
        ("webhook.certManager.issuerRef.kind=Secret", "kind"),
        ("webhook.timeoutSeconds=60", "timeoutSeconds"),
    ],
)
def test_the_schema_refuses_bad_webhook_values(helm: Path, setting: str, named: str) -> None:
    assert named in refusal(helm, "--set", setting)


def test_the_operator_network_policy_lets_the_api_server_reach_the_webhook(helm: Path) -> None:
    policy_values = (
        "--set",
        "operator.networkPolicy.enabled=true",
        "--set",
        "operator.networkPolicy.apiServerCIDRs={10.0.0.10/32}",
    )

    def ingress(*args: str) -> list[Manifest]:
        manifests = render(helm, "kwf-system", *policy_values, *args)
        (policy,) = [p for p in find(manifests, "NetworkPolicy") if p["metadata"]["name"] == "kwf-operator"]
        rules: list[Manifest] = policy["spec"]["ingress"]
        return rules

    with_webhook = ingress(
        "--set", "operator.networkPolicy.ingressFrom[0].namespaceSelector.matchLabels.team=monitoring"
    )
    # Health and metrics from the listed sources; the webhook port from any
    # (the API server is no pod a selector could name).
    assert {"ports": [{"port": 9443, "protocol": "TCP"}]} in with_webhook
    assert all(
        "from" in rule for rule in with_webhook if {"port": 9443, "protocol": "TCP"} not in rule["ports"]
    )
    assert not [
        r
        for r in ingress("--set", "webhook.enabled=false")
        if {"port": 9443, "protocol": "TCP"} in r["ports"]
    ]


@pytest.mark.usefixtures("cluster")
def test_the_generated_certificate_is_kept_across_upgrades(
    helm: Path, kubectl_path: Path, kubeconfig: Path, namespace: str
) -> None:
    """A real install and upgrade: the chart reads its Secret back rather than
    making a new CA, so the API server's caBundle and the operator's
    certificate stay a pair. The operator image cannot start, and the webhook
    holds in this namespace alone."""
    release = f"wh-{namespace}"[:40].rstrip("-")
    fullname = f"{release}-kwf"[:63]

    def helm_in(*args: str | Path) -> str:
        return ok(run(helm, f"--kubeconfig={kubeconfig}", "--namespace", namespace, *args))

    def live(*what: str) -> Manifest:
        out = ok(run(kubectl_path, f"--kubeconfig={kubeconfig}", "get", *what, "-o", "json"))
        found: Manifest = json.loads(out)
        return found

    def installed() -> tuple[str, str]:
        tls = live("secret", f"{fullname}-webhook-tls", "-n", namespace)["data"]["tls.crt"]
        ca = live("validatingwebhookconfiguration", fullname)["webhooks"][0]["clientConfig"]["caBundle"]
        return tls, ca

    values = (
        "--set", f"watchNamespaces={{{namespace}}}", "--set", "crds.install=false",
        "--set", "operator.image.repository=kwf.local/absent", "--set", "operator.image.pullPolicy=Never",
    )  # fmt: skip
    try:
        helm_in("install", release, CHART, *values, "--timeout=2m")
        first = installed()
        helm_in("upgrade", release, CHART, *values, "--set", "operator.logLevel=debug", "--timeout=2m")
        assert installed() == first
        # Rendered afresh (no cluster to read from), the chart would make a new pair.
        fresh = one(render(helm, namespace, *values, release=release), "ValidatingWebhookConfiguration")
        assert fresh["webhooks"][0]["clientConfig"]["caBundle"] != first[1]
    finally:
        run(
            helm, f"--kubeconfig={kubeconfig}", "--namespace", namespace, "uninstall", release, "--timeout=2m"
        )
