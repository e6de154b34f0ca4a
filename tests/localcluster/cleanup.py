"""Stopping the node without leaving containers, mounts or network namespaces.

The same sweep runs before every node start, so a run that crashed (kubelet
killed, containerd gone, shims still holding containers) is cleaned up by the
next `make cluster-up` as well as by `make cluster-down`. Whatever cannot be
removed is reported as an error rather than left behind in silence.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

from . import images, procs
from .layout import CNI_NETWORK, Layout
from .procs import ClusterError

SHIM = "containerd-shim-runc-v2"
CNI_RESULTS = "/var/lib/cni/results"


def stop_node(layout: Layout) -> list[str]:
    """Stop kubelet and containerd and remove every trace of their pods."""
    stopped = []
    if procs.stop("kubelet", layout.pid_file("kubelet")):
        stopped.append("kubelet")
    if procs.running(layout.pid_file("containerd")) is not None:
        _remove_containers(layout)
    if procs.stop("containerd", layout.pid_file("containerd")):
        stopped.append("containerd")
    killed = _kill_stray_shims(layout)
    if killed:
        stopped.append(f"{killed} container shim(s)")
    node_dirs = (layout.containerd_root, layout.containerd_state, layout.kubelet_root)
    for folder in node_dirs:
        _unmount_all(folder)
    shutil.rmtree(layout.containerd_state, ignore_errors=True)
    shutil.rmtree(layout.cni_state, ignore_errors=True)
    # libcni caches each attachment's result system-wide, named after the network.
    for cached in Path(CNI_RESULTS).glob(f"{CNI_NETWORK}-*-eth0"):
        sandbox = cached.name.removeprefix(f"{CNI_NETWORK}-").removesuffix("-eth0")
        Path(CNI_RESULTS, f"cni-loopback-{sandbox}-lo").unlink(missing_ok=True)
        cached.unlink(missing_ok=True)
    remaining = [point for folder in node_dirs for point in mounts_under(folder)]
    if remaining:
        raise ClusterError("mounts left under the cluster folder:\n  " + "\n  ".join(remaining))
    return stopped


def _remove_containers(layout: Layout) -> None:
    # Through containerd, so that it unmounts root filesystems and removes
    # snapshots itself; the kubelet is already stopped and cannot restart them.
    ctr = [*images.ctr(layout), "--namespace", "k8s.io"]
    tasks = procs.run([*ctr, "tasks", "list", "--quiet"], check=False).stdout.split()
    for task in tasks:
        procs.run([*ctr, "tasks", "kill", "--all", "--signal", "SIGKILL", task], check=False)
    for task in tasks:
        procs.run([*ctr, "tasks", "delete", "--force", task], check=False)
    for container in procs.run([*ctr, "containers", "list", "--quiet"], check=False).stdout.split():
        procs.run([*ctr, "containers", "delete", container], check=False)


def _kill_stray_shims(layout: Layout) -> int:
    """Shims of our containerd that outlived it (a crash), with their containers."""
    address = str(layout.containerd_socket)
    shims = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(SHIM.encode()) and address.encode() in argv:
            shims.append(int(entry.name))
    for shim in shims:
        # A container's first process is the shim's child; killing it ends the
        # container's whole pid namespace.
        for child in _children(shim):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(shim, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{pid}").exists() for pid in shims) and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(shims)


def _children(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first."""
    prefix = str(root.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split()[4])
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _unmount_all(root: Path) -> None:
    for _ in range(3):  # a mount may hide another at the same point
        points = mounts_under(root)
        if not points:
            return
        for point in points:
            if procs.run(["umount", point], check=False).returncode != 0:
                # Busy: detach it now; the kernel frees it when its last user goes.
                procs.run(["umount", "--lazy", point], check=False)
