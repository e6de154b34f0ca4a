"""Where every part of the local cluster lives, and the fixed addresses it uses.

Everything the cluster writes stays under one git-ignored folder (`.cluster/`
at the repository root) so that a crashed run can be found and cleaned up, and
so that two clones never share state. Ports avoid the defaults that a system
etcd, kubelet or containerd on the same machine would take.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
KUBE_VERSION = os.environ.get("KWF_KUBE_VERSION", "v1.36.3")

# The control plane listens on loopback only: nothing inside a pod can reach it.
API_PORT = 6443
ETCD_CLIENT_PORT = 2479
ETCD_PEER_PORT = 2480
CONTROLLER_MANAGER_PORT = 10357
SCHEDULER_PORT = 10359
KUBELET_PORT = 10350
KUBELET_HEALTHZ_PORT = 10358

# The pod network is a private bridge on this machine, without a default route
# in the pods and without masquerading: a pod reaches the host's bridge address
# and other pods, nothing beyond. podman's default network takes 10.88.0.0/16.
BRIDGE = "kwf0"
POD_SUBNET = "10.213.0.0/24"
POD_GATEWAY = "10.213.0.1"
POD_RANGE_START = "10.213.0.10"
SERVICE_SUBNET = "10.214.0.0/24"
NODE_NAME = "kwf-node"
CNI_NETWORK = "kwf"

RUNNER_IMAGE = "kwf.local/runner:dev"
OPERATOR_IMAGE = "kwf.local/operator:dev"
PAUSE_IMAGE = "kwf.local/pause:dev"


@dataclasses.dataclass(frozen=True)
class Layout:
    """Paths of one cluster, all derived from its root folder."""

    root: Path = REPO_ROOT / ".cluster"
    version: str = KUBE_VERSION

    @property
    def bin(self) -> Path:
        return self.root / "bin" / self.version

    def kube_binary(self, name: str) -> Path:
        return self.bin / name

    @property
    def kubectl(self) -> Path:
        return self.kube_binary("kubectl")

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def run(self) -> Path:
        """Pid files and sockets: what tells a running cluster from a dead one."""
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def containerd_root(self) -> Path:
        """Images and snapshots: kept between runs so that imports are not repeated."""
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def containerd_socket(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def cni_config(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_state(self) -> Path:
        """host-local's address leases; dropped with the node."""
        return self.root / "cni" / "leases"

    @property
    def images(self) -> Path:
        """Image archives and the hashes of what each was built from."""
        return self.root / "images"

    @property
    def podman_root(self) -> Path:
        return self.root / "podman" / "root"

    @property
    def podman_run(self) -> Path:
        return self.root / "podman" / "run"

    @property
    def api_server(self) -> str:
        return f"https://127.0.0.1:{API_PORT}"

    def pid_file(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"


def host_address() -> str:
    """The host's address as seen from a pod: serve test servers for step pods here."""
    return POD_GATEWAY
