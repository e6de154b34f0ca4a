"""Bringing the whole local cluster up and down: what `make cluster-*` and the test sessions call."""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator

from . import cleanup, controlplane, images, node, packages
from .layout import BRIDGE, Layout
from .procs import ClusterError

CONTROL_PLANE_PROGRAMS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


def build(layout: Layout) -> None:
    """Install the Debian packages and build the Kubernetes programs that are missing."""
    packages.ensure_debian(packages.CONTROL_PLANE_PACKAGES | packages.NODE_PACKAGES)
    packages.ensure_kube(layout)


def up(layout: Layout | None = None, *, with_node: bool = True, build: bool = True) -> Layout:
    """Start the cluster, or reuse it when it is already running and healthy.

    Without the node, only the control plane is ensured (the `tests/cluster`
    tier); a node that runs already is left as it is. With build=False (the
    test sessions, under pytest's per-test timeout), a Kubernetes program
    that is not built yet is an error that names the make target instead.
    """
    layout = layout or Layout()
    with _exclusive(layout):
        return _up(layout, with_node, build)


@contextlib.contextmanager
def _exclusive(layout: Layout) -> Iterator[None]:
    """One `up` or `down` at a time: test sessions and `make` share the cluster.

    A second caller waits, then finds the cluster healthy and reuses it,
    instead of restarting what the first one is still starting.
    """
    layout.root.mkdir(parents=True, exist_ok=True)
    with (layout.root / "cluster.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _up(layout: Layout, with_node: bool, build: bool) -> Layout:
    started = time.monotonic()
    programs = CONTROL_PLANE_PROGRAMS + (("kubelet",) if with_node else ())
    if not build:
        missing = [name for name in programs if not layout.kube_binary(name).exists()]
        if missing:
            raise ClusterError(f"{', '.join(missing)} {layout.version} not built: run `make kube` first")
    packages.ensure_debian(packages.CONTROL_PLANE_PACKAGES | (packages.NODE_PACKAGES if with_node else {}))
    packages.ensure_kube(layout, programs)

    if controlplane.healthy(layout):
        print("control plane: running, reused", flush=True)
        fresh_control_plane = False
    else:
        print("control plane: starting", flush=True)
        # A node registered with a previous (now wiped) etcd would keep pods
        # the new control plane knows nothing about.
        if with_node or any(node.running(layout).values()):
            cleanup.stop_node(layout)
        controlplane.start(layout)
        fresh_control_plane = True

    if with_node:
        if not fresh_control_plane and node.healthy(layout):
            print("node: running, reused", flush=True)
            images.import_all(layout)
        else:
            print("node: starting", flush=True)
            node.start(layout)
    print(f"cluster ready in {time.monotonic() - started:.1f}s; KUBECONFIG={layout.kubeconfig}", flush=True)
    return layout


def down(layout: Layout | None = None) -> list[str]:
    """Stop exactly what `up` started and remove the node's containers, mounts and bridge."""
    layout = layout or Layout()
    with _exclusive(layout):
        return _down(layout)


def _down(layout: Layout) -> list[str]:
    stopped: list[str] = []
    controlplane.timed("node", lambda: stopped.extend(cleanup.stop_node(layout)))
    leftovers = node.pod_network_leftovers()
    if leftovers:
        raise ClusterError(f"pod interfaces still on {BRIDGE}: {', '.join(leftovers)}")
    node.delete_bridge()
    controlplane.timed("control plane", lambda: stopped.extend(controlplane.stop(layout)))
    remaining = cleanup.mounts_under(layout.root)
    if remaining:
        raise ClusterError("mounts left under the cluster folder:\n  " + "\n  ".join(remaining))
    return stopped


def status(layout: Layout | None = None) -> dict[str, bool]:
    layout = layout or Layout()
    state = {**controlplane.running(layout), **node.running(layout)}
    state["apiserver /readyz"] = state["kube-apiserver"] and controlplane.api_ready(layout)
    state["node Ready"] = state["apiserver /readyz"] and node.node_ready(layout)
    return state
