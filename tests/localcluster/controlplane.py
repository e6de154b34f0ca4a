"""etcd, kube-apiserver, kube-controller-manager and kube-scheduler on 127.0.0.1.

A fresh control plane starts from an empty etcd: objects left by an earlier
run (pods bound to a node that no longer exists, half-deleted namespaces)
would only confuse the next test session. A running, healthy one is reused.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from . import certs, procs
from .layout import (
    API_PORT,
    CONTROLLER_MANAGER_PORT,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    SCHEDULER_PORT,
    SERVICE_SUBNET,
    Layout,
)
from .procs import ClusterError

ETCD = "/usr/bin/etcd"
# Stopped in this order (the reverse of starting).
COMPONENTS = ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")


def https_get(layout: Layout, url: str, timeout: float = 2) -> tuple[int, str]:
    """GET with the admin's client certificate; (0, reason) when nothing answers."""
    context = ssl.create_default_context(cafile=layout.pki / "ca.crt")
    context.load_cert_chain(layout.pki / "admin.crt", layout.pki / "admin.key")
    if not url.startswith(layout.api_server):
        # The scheduler's and controller-manager's serving certificates are
        # self-signed at start; only the API server's is ours.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except (OSError, ssl.SSLError) as error:
        return 0, str(error)


def api_ready(layout: Layout) -> bool:
    if not (layout.pki / "admin.crt").exists():
        return False
    return https_get(layout, f"{layout.api_server}/readyz")[0] == 200


def running(layout: Layout) -> dict[str, bool]:
    return {name: procs.running(layout.pid_file(name)) is not None for name in COMPONENTS}


def healthy(layout: Layout) -> bool:
    return all(running(layout).values()) and api_ready(layout)


def stop(layout: Layout) -> list[str]:
    """Stop whatever control-plane process of ours runs; the names of those stopped.

    A short grace: the API server otherwise waits out clients' open requests
    (up to a minute), and the next start wipes etcd anyway.
    """
    return [name for name in COMPONENTS if procs.stop(name, layout.pid_file(name), timeout=3)]


def start(layout: Layout) -> None:
    """Start a fresh control plane (after stopping any remains of an earlier one)."""
    stop(layout)
    _check_ports_free()
    timed("certificates", lambda: _configure(layout))
    shutil.rmtree(layout.etcd_data, ignore_errors=True)
    timed("etcd", lambda: _start_etcd(layout))
    timed("kube-apiserver", lambda: _start_apiserver(layout))
    timed("controller-manager, scheduler", lambda: _start_controllers(layout))


def timed(what: str, action: Callable[[], object]) -> None:
    started = time.monotonic()
    action()
    print(f"  {what}: {time.monotonic() - started:.1f}s", flush=True)


def _check_ports_free() -> None:
    for port in (API_PORT, ETCD_CLIENT_PORT, ETCD_PEER_PORT, CONTROLLER_MANAGER_PORT, SCHEDULER_PORT):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                raise ClusterError(
                    f"127.0.0.1:{port} is taken by a process this cluster did not start "
                    f"(another clone's cluster? `ss -ltnp 'sport = :{port}'` tells which)"
                ) from None


def _configure(layout: Layout) -> None:
    certs.ensure(layout)
    certs.write_kubeconfig(layout, layout.kubeconfig, "admin")
    for user in ("controller-manager", "scheduler", "kubelet"):
        certs.write_kubeconfig(layout, layout.config / f"{user}.kubeconfig", user)


def _launch(layout: Layout, name: str, argv: Sequence[str | Path]) -> procs.Recorded:
    return procs.start(name, argv, pid_file=layout.pid_file(name), log_file=layout.log_file(name))


def _wait(layout: Layout, name: str, check: Callable[[], object], timeout: float = 60) -> None:
    """Wait for `check()`, failing at once if the process died meanwhile."""

    def ready() -> bool:
        if procs.running(layout.pid_file(name)) is None:
            raise ClusterError(f"{name} exited during start; see {layout.log_file(name)}")
        return bool(check())

    procs.wait_for(f"{name} to be ready", ready, timeout=timeout, log=layout.log_file(name))


def _start_etcd(layout: Layout) -> None:
    if not Path(ETCD).exists():
        raise ClusterError("etcd is missing (Debian package etcd-server)")
    client = f"http://127.0.0.1:{ETCD_CLIENT_PORT}"
    peer = f"http://127.0.0.1:{ETCD_PEER_PORT}"
    _launch(layout, "etcd", [
        ETCD, "--name=kwf", f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=kwf={peer}", "--initial-cluster-state=new",
        "--log-level=warn",
    ])  # fmt: skip

    def etcd_healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{client}/health", timeout=1) as response:
                return b'"true"' in response.read()
        except OSError:
            return False

    _wait(layout, "etcd", etcd_healthy)


def _start_apiserver(layout: Layout) -> None:
    pki = layout.pki
    _launch(layout, "kube-apiserver", [
        layout.kube_binary("kube-apiserver"),
        "--bind-address=127.0.0.1", f"--secure-port={API_PORT}",
        f"--etcd-servers=http://127.0.0.1:{ETCD_CLIENT_PORT}",
        # The only address is loopback; the default reconciler would publish
        # it as the `kubernetes` Service's endpoint, which a pod cannot use.
        "--endpoint-reconciler-type=none",
        f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_SUBNET}",
        "--authorization-mode=Node,RBAC",
        # The node has no resolvable name; the apiserver reaches the kubelet by its address.
        "--kubelet-preferred-address-types=InternalIP",
        "--allow-privileged=true",
        "--profiling=false",
    ])  # fmt: skip
    _wait(layout, "kube-apiserver", lambda: api_ready(layout))


def _start_controllers(layout: Layout) -> None:
    pki = layout.pki
    manager = layout.config / "controller-manager.kubeconfig"
    scheduler = layout.config / "scheduler.kubeconfig"
    _launch(layout, "kube-controller-manager", [
        layout.kube_binary("kube-controller-manager"),
        f"--kubeconfig={manager}", f"--authentication-kubeconfig={manager}",
        f"--authorization-kubeconfig={manager}",
        "--bind-address=127.0.0.1", f"--secure-port={CONTROLLER_MANAGER_PORT}",
        # One instance: a lease left by a killed run would delay the start by
        # its whole duration.
        "--leader-elect=false",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        "--use-service-account-credentials=true",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}", f"--cluster-signing-key-file={pki / 'ca.key'}",
        f"--service-cluster-ip-range={SERVICE_SUBNET}",
        "--profiling=false",
    ])  # fmt: skip
    _launch(layout, "kube-scheduler", [
        layout.kube_binary("kube-scheduler"),
        f"--kubeconfig={scheduler}", f"--authentication-kubeconfig={scheduler}",
        f"--authorization-kubeconfig={scheduler}",
        "--bind-address=127.0.0.1", f"--secure-port={SCHEDULER_PORT}",
        "--leader-elect=false",
        "--profiling=false",
    ])  # fmt: skip

    def answers(url: str) -> Callable[[], bool]:
        return lambda: https_get(layout, url)[0] == 200

    _wait(layout, "kube-controller-manager", answers(f"https://127.0.0.1:{CONTROLLER_MANAGER_PORT}/healthz"))
    _wait(layout, "kube-scheduler", answers(f"https://127.0.0.1:{SCHEDULER_PORT}/healthz"))
    # Until the controller-manager has made it, pods in `default` are refused.
    _wait(
        layout,
        "kube-controller-manager",
        answers(f"{layout.api_server}/api/v1/namespaces/default/serviceaccounts/default"),
    )
