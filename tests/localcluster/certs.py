"""The cluster's certificates and kubeconfigs, made with the openssl command.

One private CA signs everything: the API server's serving certificate, a
client certificate per component, the kubelet's serving certificate, and the
client certificate the API server shows the kubelet (for `kubectl logs`).
They are made once and kept, so a kubeconfig handed out earlier stays valid
across restarts of the cluster.
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
import shutil
import tempfile
from pathlib import Path

from .layout import NODE_NAME, POD_GATEWAY, SERVICE_SUBNET, Layout
from .procs import run

DAYS = "3650"


@dataclasses.dataclass(frozen=True)
class Cert:
    name: str
    subject: str
    usage: str  # extendedKeyUsage
    sans: tuple[str, ...] = ()


def _service_ip() -> str:
    # The first address of the service range is the `kubernetes` Service.
    prefix, last = SERVICE_SUBNET.split("/")[0].rsplit(".", 1)
    return f"{prefix}.{int(last) + 1}"


CERTS = (
    Cert(
        "apiserver",
        "/CN=kube-apiserver",
        "serverAuth",
        (
            "IP:127.0.0.1",
            f"IP:{_service_ip()}",
            "DNS:localhost",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
        ),
    ),
    Cert("admin", "/O=system:masters/CN=kwf-admin", "clientAuth"),
    Cert("controller-manager", "/CN=system:kube-controller-manager", "clientAuth"),
    Cert("scheduler", "/CN=system:kube-scheduler", "clientAuth"),
    Cert("kubelet", f"/O=system:nodes/CN=system:node:{NODE_NAME}", "clientAuth"),
    Cert("kubelet-serving", f"/CN={NODE_NAME}", "serverAuth", (f"IP:{POD_GATEWAY}", f"DNS:{NODE_NAME}")),
    # The API server's identity towards the kubelet (logs, exec, port-forward).
    Cert("apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", "clientAuth"),
)


def ensure(layout: Layout) -> None:
    """Make whatever certificate or key is missing; a missing CA restarts from scratch."""
    pki = layout.pki
    if not (pki / "ca.crt").exists() or not (pki / "ca.key").exists():
        shutil.rmtree(pki, ignore_errors=True)
    pki.mkdir(parents=True, exist_ok=True)
    pki.chmod(0o700)
    if not (pki / "ca.crt").exists():
        _key(pki / "ca.key")
        run(
            ["openssl", "req", "-x509", "-new", "-key", pki / "ca.key", "-subj", "/CN=kwf-local-ca",
             "-days", DAYS, "-sha256", "-out", pki / "ca.crt"]
        )  # fmt: skip
    if not (pki / "sa.key").exists():
        _key(pki / "sa.key")
        run(["openssl", "ec", "-in", pki / "sa.key", "-pubout", "-out", pki / "sa.pub"])
    for cert in CERTS:
        if not (pki / f"{cert.name}.crt").exists():
            _sign(pki, cert)


def _key(path: Path) -> None:
    # EC keys: generated in milliseconds, accepted by every Kubernetes component.
    run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", path])
    path.chmod(0o600)


def _sign(pki: Path, cert: Cert) -> None:
    _key(pki / f"{cert.name}.key")
    extensions = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={cert.usage}",
    ]
    if cert.sans:
        extensions.append("subjectAltName=" + ",".join(cert.sans))
    with tempfile.TemporaryDirectory() as tmp:
        csr, ext = Path(tmp) / "csr", Path(tmp) / "ext"
        ext.write_text("\n".join(extensions) + "\n")
        run(["openssl", "req", "-new", "-key", pki / f"{cert.name}.key", "-subj", cert.subject, "-out", csr])
        run(
            ["openssl", "x509", "-req", "-in", csr, "-CA", pki / "ca.crt", "-CAkey", pki / "ca.key",
             "-set_serial", f"0x{secrets.token_hex(16)}", "-days", DAYS, "-sha256", "-extfile", ext,
             "-out", pki / f"{cert.name}.crt"]
        )  # fmt: skip


def write_kubeconfig(layout: Layout, path: Path, user: str) -> None:
    """A self-contained kubeconfig (certificates embedded) for one client certificate."""

    def data(name: str) -> str:
        return base64.b64encode((layout.pki / name).read_bytes()).decode()

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: kwf-local
  cluster:
    server: {layout.api_server}
    certificate-authority-data: {data("ca.crt")}
users:
- name: {user}
  user:
    client-certificate-data: {data(f"{user}.crt")}
    client-key-data: {data(f"{user}.key")}
contexts:
- name: kwf-local
  context: {{cluster: kwf-local, user: {user}}}
current-context: kwf-local
"""
    )
    path.chmod(0o600)
