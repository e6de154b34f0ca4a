"""The node: a bridge for pods, containerd with runc, and a kubelet.

containerd gets its own config, root, state and socket under `.cluster/`, so
it neither uses nor disturbs a system containerd. Network namespaces are
mounted under its state folder (`netns_mounts_under_state_dir`), so every
mount the node makes lies under `.cluster/`, and a sweep of that folder is
enough to clean up after a crash.
"""

from __future__ import annotations

import json
import os
import shutil

from . import cleanup, images, procs
from .controlplane import https_get, timed
from .layout import (
    BRIDGE,
    CNI_NETWORK,
    KUBELET_HEALTHZ_PORT,
    KUBELET_PORT,
    NODE_NAME,
    PAUSE_IMAGE,
    POD_GATEWAY,
    POD_RANGE_START,
    POD_SUBNET,
    Layout,
)
from .packages import CNI_BIN
from .procs import ClusterError

CONTAINERD = "/usr/bin/containerd"
RUNC = "/usr/sbin/runc"
COMPONENTS = ("kubelet", "containerd")


def running(layout: Layout) -> dict[str, bool]:
    return {name: procs.running(layout.pid_file(name)) is not None for name in COMPONENTS}


def node_ready(layout: Layout) -> bool:
    status, body = https_get(layout, f"{layout.api_server}/api/v1/nodes/{NODE_NAME}")
    if status != 200:
        return False
    conditions = json.loads(body).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def healthy(layout: Layout) -> bool:
    return all(running(layout).values()) and node_ready(layout)


def start(layout: Layout) -> None:
    """Start a fresh node, after sweeping away whatever an earlier run left."""
    if os.geteuid() != 0:
        raise ClusterError("the node (containerd, kubelet) needs root")
    cleanup.stop_node(layout)
    shutil.rmtree(layout.kubelet_root, ignore_errors=True)
    timed("pod bridge", lambda: _bridge())
    timed("containerd", lambda: _start_containerd(layout))
    timed("images into containerd", lambda: images.import_all(layout))
    timed("kubelet -> node Ready", lambda: _start_kubelet(layout))


def _ip(*args: str, check: bool = True) -> str:
    return procs.run(["ip", *args], check=check).stdout


def _bridge() -> None:
    # The bridge and its address exist before the kubelet starts, because the
    # kubelet advertises this address as the node's (a loopback one is refused)
    # and the API server reaches the kubelet through it.
    if _ip("link", "show", BRIDGE, check=False).strip() == "":
        _ip("link", "add", BRIDGE, "type", "bridge")
    prefix = POD_SUBNET.split("/")[1]
    if f"inet {POD_GATEWAY}/{prefix}" not in _ip("-4", "addr", "show", "dev", BRIDGE):
        _ip("addr", "add", f"{POD_GATEWAY}/{prefix}", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")


def _write_cni_config(layout: Layout) -> None:
    # No default route in the pods (isGateway false, no routes) and no
    # masquerading: a pod can reach the bridge address and other pods only.
    config = {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(layout.cni_state),
                    "ranges": [
                        [{"subnet": POD_SUBNET, "rangeStart": POD_RANGE_START, "gateway": POD_GATEWAY}]
                    ],
                    "routes": [],
                },
            }
        ],
    }
    layout.cni_config.mkdir(parents=True, exist_ok=True)
    for stale in layout.cni_config.iterdir():
        stale.unlink()
    (layout.cni_config / f"10-{CNI_NETWORK}.conflist").write_text(json.dumps(config, indent=2) + "\n")


def _containerd_config(layout: Layout) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{layout.containerd_root}"
state = "{layout.containerd_state}"
# Plugins that would otherwise use system-wide folders, or that this node never needs.
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{layout.containerd_socket}"

[ttrpc]
  address = "{layout.containerd_socket}.ttrpc"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails to
  # lower its own oom_score_adj.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  enable_selinux = false

  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [{cri}.containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        Root = "{layout.containerd_state / "runc"}"
        SystemdCgroup = false

  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{layout.cni_config}"
    max_conf_num = 1
"""


def _start_containerd(layout: Layout) -> None:
    socket = str(layout.containerd_socket)
    if len(socket) + len(".ttrpc") > 100:
        raise ClusterError(f"{socket} is too long for a unix socket: clone the repository to a shorter path")
    _write_cni_config(layout)
    config = layout.config / "containerd.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(_containerd_config(layout))
    layout.containerd_root.mkdir(parents=True, exist_ok=True)
    layout.containerd_socket.unlink(missing_ok=True)
    procs.start(
        "containerd",
        [CONTAINERD, f"--config={config}", "--log-level=warn"],
        pid_file=layout.pid_file("containerd"),
        log_file=layout.log_file("containerd"),
    )

    def answers() -> bool:
        if procs.running(layout.pid_file("containerd")) is None:
            raise ClusterError(f"containerd exited during start; see {layout.log_file('containerd')}")
        return procs.run([*images.ctr(layout), "version"], check=False).returncode == 0

    procs.wait_for("containerd", answers, timeout=30, log=layout.log_file("containerd"))


def _kubelet_config(layout: Layout) -> str:
    pki = layout.pki
    return f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# Served on the bridge address only, to the API server's client certificate.
address: {POD_GATEWAY}
port: {KUBELET_PORT}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {KUBELET_HEALTHZ_PORT}
tlsCertFile: {pki / "kubelet-serving.crt"}
tlsPrivateKeyFile: {pki / "kubelet-serving.key"}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: {pki / "ca.crt"}}}
# Whoever holds a certificate of this cluster's CA is trusted in full.
authorization: {{mode: AlwaysAllow}}
containerRuntimeEndpoint: unix://{layout.containerd_socket}
cgroupDriver: cgroupfs
# This machine has a cgroup v1 hierarchy and may have swap.
failCgroupV1: false
failSwapOn: false
podLogsDir: {layout.kubelet_root / "pod-logs"}
clusterDomain: cluster.local
# The images are imported, never pulled: nothing may garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}}
serializeImagePulls: false
"""


def _start_kubelet(layout: Layout) -> None:
    config = layout.config / "kubelet.yaml"
    config.write_text(_kubelet_config(layout))
    layout.kubelet_root.mkdir(parents=True, exist_ok=True)
    procs.start(
        "kubelet",
        [
            layout.kube_binary("kubelet"),
            f"--config={config}",
            f"--kubeconfig={layout.config / 'kubelet.kubeconfig'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={POD_GATEWAY}",
            f"--root-dir={layout.kubelet_root}",
            f"--cert-dir={layout.kubelet_root / 'pki'}",
        ],
        pid_file=layout.pid_file("kubelet"),
        log_file=layout.log_file("kubelet"),
    )

    def ready() -> bool:
        if procs.running(layout.pid_file("kubelet")) is None:
            raise ClusterError(f"kubelet exited during start; see {layout.log_file('kubelet')}")
        return node_ready(layout)

    procs.wait_for("node Ready", ready, timeout=90, interval=0.2, log=layout.log_file("kubelet"))


def pod_network_leftovers() -> list[str]:
    """Interfaces still attached to the bridge: each is a pod's network that outlived it."""
    output = _ip("-o", "link", "show", "master", BRIDGE, check=False)
    return [line.split(":")[1].strip() for line in output.splitlines() if line.strip()]


def delete_bridge() -> None:
    if _ip("link", "show", BRIDGE, check=False).strip():
        _ip("link", "delete", BRIDGE)
