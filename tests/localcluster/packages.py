"""The programs the cluster runs: Debian packages, and Kubernetes built from Go.

Debian provides etcd, containerd, runc, the CNI plugins, podman and
debootstrap; they are installed with apt-get when missing. The Kubernetes
programs are compiled from the `k8s.io/kubernetes` Go module by
hack/build-kube.sh and cached per version under `.cluster/bin/`.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from .layout import REPO_ROOT, Layout
from .procs import ClusterError, run

# Debian package -> a file it installs that we use.
CONTROL_PLANE_PACKAGES = {
    "etcd-server": "/usr/bin/etcd",
    "openssl": "/usr/bin/openssl",
}
NODE_PACKAGES = {
    "containerd": "/usr/bin/containerd",
    "runc": "/usr/sbin/runc",
    "containernetworking-plugins": "/usr/lib/cni/bridge",
    "iproute2": "/usr/sbin/ip",
    "mount": "/usr/bin/umount",
}
IMAGE_PACKAGES = {
    "podman": "/usr/bin/podman",
    # podman runs image builds with runc, not the crun it depends on.
    "runc": "/usr/sbin/runc",
    "debootstrap": "/usr/sbin/debootstrap",
    "gcc": "/usr/bin/gcc",
    "libc6-dev": "/usr/lib/x86_64-linux-gnu/libc.a",
}
CNI_BIN = "/usr/lib/cni"
KUBE_PROGRAMS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet")


def ensure_debian(packages: dict[str, str]) -> None:
    """apt-get install whichever of `packages` is missing (root only)."""
    missing = sorted(name for name, path in packages.items() if not Path(path).exists())
    if not missing:
        return
    if os.geteuid() != 0:
        raise ClusterError(f"missing Debian packages {missing}: install them as root (apt-get install)")
    started = time.monotonic()
    print(f"installing Debian packages: {' '.join(missing)}", flush=True)
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if run(install, check=False, env=env).returncode != 0:
        # A fresh machine has no package lists yet.
        run(["apt-get", "update", "-q"], env=env)
        run(install, env=env)
    print(f"  installed in {time.monotonic() - started:.1f}s", flush=True)


def ensure_kube(layout: Layout, programs: Iterable[str] = KUBE_PROGRAMS) -> None:
    """Build the Kubernetes programs that are not cached yet (minutes when cold)."""
    missing = [name for name in programs if not layout.kube_binary(name).exists()]
    if not missing:
        return
    if shutil.which("go") is None:
        raise ClusterError("building Kubernetes needs Go (1.26; see hack/build-kube.sh)")
    started = time.monotonic()
    print(f"building {' '.join(missing)} {layout.version} (cold: several minutes)", flush=True)
    layout.bin.mkdir(parents=True, exist_ok=True)
    # Another process (a second `make`, a pytest session) may be building the
    # same programs: the lock makes it wait instead of compiling twice.
    with (layout.bin.parent / f".build-{layout.version}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        still_missing = [name for name in missing if not layout.kube_binary(name).exists()]
        if still_missing:
            script = REPO_ROOT / "hack" / "build-kube.sh"
            result = subprocess.run(
                ["bash", str(script), layout.version, str(layout.bin), *still_missing],
                stdout=sys.stdout,
                stderr=sys.stderr,
                check=False,
            )
            if result.returncode != 0:
                raise ClusterError(f"hack/build-kube.sh failed with {result.returncode}")
    print(f"  built in {time.monotonic() - started:.1f}s", flush=True)
