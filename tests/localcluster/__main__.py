"""`python -m tests.localcluster build|up|down|status|images` (what the Makefile's cluster targets run).

`up` also applies crds/, so that `make run` and the benches find the kinds.
"""

from __future__ import annotations

import argparse
import sys
import time

from . import cluster, images
from .kube import Kube
from .layout import Layout
from .procs import ClusterError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.localcluster", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the cluster, or reuse a running one")
    start.add_argument("--no-node", action="store_true", help="the control plane only")
    commands.add_parser("down", help="stop the cluster and remove its containers, mounts and bridge")
    commands.add_parser("status", help="which parts run; exit 1 unless all are healthy")
    commands.add_parser("images", help="build the runner, operator and pause images (cached)")
    commands.add_parser("build", help="Debian packages and Kubernetes programs (cached)")
    args = parser.parse_args(argv)
    layout = Layout()
    try:
        if args.command == "up":
            cluster.up(layout, with_node=not args.no_node)
            crds = Kube(kubeconfig=layout.kubeconfig, kubectl_path=layout.kubectl).apply_crds()
            print(f"CRDs applied and Established: {len(crds)}")
        elif args.command == "down":
            started = time.monotonic()
            stopped = cluster.down(layout)
            what = ", ".join(stopped) or "nothing was running"
            print(f"stopped in {time.monotonic() - started:.1f}s: {what}")
        elif args.command == "status":
            state = cluster.status(layout)
            for name, ok in state.items():
                print(f"{name:26} {'yes' if ok else 'no'}")
            print(f"kubeconfig                 {layout.kubeconfig}")
            return 0 if all(state.values()) else 1
        elif args.command == "build":
            started = time.monotonic()
            cluster.build(layout)
            print(f"Kubernetes programs and packages ready in {time.monotonic() - started:.1f}s")
        elif args.command == "images":
            started = time.monotonic()
            images.build_all(layout)
            print(f"images ready in {time.monotonic() - started:.1f}s")
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
