"""Where the API server is and how to prove who we are: a kubeconfig (client
certificate or token) or the in-cluster service account."""

from __future__ import annotations

import base64
import dataclasses
import os
import ssl
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

JSON = Any

IN_CLUSTER_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclasses.dataclass(frozen=True)
class Config:
    """Where the API server is and how to prove who we are."""

    server: str
    ssl_context: ssl.SSLContext | bool
    token: str | None = None
    namespace: str = "default"
    # The raw material, for other clients of the same cluster (kopf's login).
    ca_data: bytes | None = dataclasses.field(default=None, repr=False)
    cert_data: bytes | None = dataclasses.field(default=None, repr=False)
    key_data: bytes | None = dataclasses.field(default=None, repr=False)
    insecure: bool = False


def _material(entry: Mapping[str, JSON], key: str, base: Path) -> bytes | None:
    """A kubeconfig's certificate: inline ``<key>-data`` (base64) or a file path."""
    data = entry.get(f"{key}-data")
    if data:
        return base64.b64decode(str(data))
    path = entry.get(key)
    if path:
        return (base / str(path)).read_bytes()
    return None


def _ssl_context(ca: bytes | None, cert: bytes | None, key: bytes | None, insecure: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif ca:
        context.load_verify_locations(cadata=ca.decode())
    if cert and key:
        # ssl only loads a key pair from files: a private folder, removed at once.
        with tempfile.TemporaryDirectory(prefix="kwf-") as folder:
            cert_file, key_file = Path(folder, "cert.pem"), Path(folder, "key.pem")
            cert_file.write_bytes(cert)
            key_file.touch(mode=0o600)
            key_file.write_bytes(key)
            context.load_cert_chain(cert_file, key_file)
    return context


def load_kubeconfig(path: str | os.PathLike[str], context: str | None = None) -> Config:
    """Read a kubeconfig file (blocking: call it before the loop or in a thread)."""
    file = Path(path).expanduser()
    doc = yaml.safe_load(file.read_text()) or {}
    name = context or doc.get("current-context")
    contexts = {c["name"]: c.get("context", {}) for c in doc.get("contexts") or []}
    if name not in contexts:
        raise ValueError(f"{file}: no context {name!r}")
    ctx = contexts[name]
    clusters = {c["name"]: c.get("cluster", {}) for c in doc.get("clusters") or []}
    users = {u["name"]: u.get("user", {}) for u in doc.get("users") or []}
    cluster, user = clusters.get(ctx.get("cluster"), {}), users.get(ctx.get("user"), {})
    if not cluster.get("server"):
        raise ValueError(f"{file}: cluster of context {name!r} has no server")
    base = file.parent
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = (base / user["tokenFile"]).read_text().strip()
    ca = _material(cluster, "certificate-authority", base)
    cert = _material(user, "client-certificate", base)
    key = _material(user, "client-key", base)
    insecure = bool(cluster.get("insecure-skip-tls-verify"))
    return Config(
        server=cluster["server"].rstrip("/"),
        ssl_context=_ssl_context(ca, cert, key, insecure),
        token=token,
        namespace=ctx.get("namespace") or "default",
        ca_data=ca,
        cert_data=cert,
        key_data=key,
        insecure=insecure,
    )


def load_in_cluster() -> Config:
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
    if ":" in host:
        host = f"[{host}]"
    namespace_file = IN_CLUSTER_DIR / "namespace"
    ca = (IN_CLUSTER_DIR / "ca.crt").read_bytes()
    return Config(
        server=f"https://{host}:{port}",
        ssl_context=_ssl_context(ca, None, None, False),
        ca_data=ca,
        token=(IN_CLUSTER_DIR / "token").read_text().strip(),
        namespace=namespace_file.read_text().strip() if namespace_file.exists() else "default",
    )


def load_config(kubeconfig: str | os.PathLike[str] | None = None) -> Config:
    """An explicit kubeconfig, else ``$KUBECONFIG``, else in-cluster, else ``~/.kube/config``."""
    if kubeconfig:
        return load_kubeconfig(kubeconfig)
    if os.environ.get("KUBECONFIG"):
        return load_kubeconfig(os.environ["KUBECONFIG"].split(os.pathsep)[0])
    if os.environ.get("KUBERNETES_SERVICE_HOST") and (IN_CLUSTER_DIR / "token").exists():
        return load_in_cluster()
    return load_kubeconfig("~/.kube/config")
