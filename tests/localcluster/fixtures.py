"""pytest fixtures of the cluster tiers; tests/cluster and tests/e2e import them into their conftest.

The session fixture `cluster` depends on `cluster_kind`, which each conftest
defines: "control-plane" (tests/cluster), "local" or "kind" (tests/e2e). A
cluster started by a session is left running for the next one (`make
cluster-down` stops it); a running, healthy one is reused in a second or so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from . import cluster as local
from . import images
from . import layout as addresses
from .kube import Kube
from .layout import NODE_NAME, OPERATOR_IMAGE, REPO_ROOT, RUNNER_IMAGE, Layout
from .procs import ClusterError

KIND_CLUSTER_NAME = "kwf-e2e"


def _local(with_node: bool) -> Kube:
    layout = Layout()
    try:
        if with_node:
            if not (layout.images / "base.tar").exists():
                raise ClusterError("the images are not built: run `make images` first")
            images.build_all(layout)  # only what kwf's code changed since: seconds
        local.up(layout, with_node=with_node, build=False)
    except ClusterError as error:
        pytest.fail(f"the local cluster did not start: {error}", pytrace=False)
    return Kube(
        kubeconfig=layout.kubeconfig,
        kubectl_path=layout.kubectl,
        host_address=addresses.host_address() if with_node else None,
        node_name=NODE_NAME if with_node else None,
    )


@contextlib.contextmanager
def _kind() -> Iterator[Kube]:
    """A kind cluster through pytest-kind, for machines with Docker (and kind, or internet)."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True).returncode != 0:
        pytest.skip("--cluster=kind needs a working Docker daemon (`docker info` failed)")
    from pytest_kind import KindCluster  # type: ignore[import-untyped]

    kubectl = Layout().kubectl if Layout().kubectl.exists() else shutil.which("kubectl")
    kind_binary = shutil.which("kind")
    kind = KindCluster(
        KIND_CLUSTER_NAME,
        kind_path=Path(kind_binary) if kind_binary else None,
        kubectl_path=Path(kubectl) if kubectl else None,
    )
    try:
        kind.create()
    except Exception as error:  # a failed download or cluster creation: no kind here
        pytest.skip(f"kind is not usable here: {error}")
    try:
        # Ordinary builds of the same Dockerfiles, from the package index.
        for image, (_, dockerfile) in images.APP_IMAGES.items():
            subprocess.run(
                [docker, "build", "-q", "-f", str(dockerfile), "-t", image, str(REPO_ROOT)], check=True
            )
            kind.load_docker_image(image)
        gateways = subprocess.run(
            [docker, "network", "inspect", "kind", "--format", "{{range .IPAM.Config}}{{.Gateway}} {{end}}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        yield Kube(
            kubeconfig=kind.kubeconfig_path,
            kubectl_path=kind.kubectl_path,
            host_address=next((address for address in gateways if "." in address), None),
            node_name=f"{KIND_CLUSTER_NAME}-control-plane",
        )
    finally:
        if os.environ.get("KWF_KEEP_KIND") != "1":
            kind.delete()


@pytest.fixture(scope="session")
def cluster(cluster_kind: str) -> Iterator[Kube]:
    """The cluster of this session, with the project's CRDs applied and Established.

    KUBECONFIG points at it for the whole session, so that an in-process
    operator (kopf) and any Kubernetes client find it without arguments.
    """
    with contextlib.ExitStack() as stack:
        if cluster_kind == "kind":
            access = stack.enter_context(_kind())
        else:
            access = _local(with_node=cluster_kind == "local")
        access.apply_crds()
        previous = os.environ.get("KUBECONFIG")
        os.environ["KUBECONFIG"] = str(access.kubeconfig)
        try:
            yield access
        finally:
            if previous is None:
                os.environ.pop("KUBECONFIG", None)
            else:
                os.environ["KUBECONFIG"] = previous


@pytest.fixture(scope="session")
def kubeconfig(cluster: Kube) -> Path:
    return cluster.kubeconfig


@pytest.fixture(scope="session")
def kubectl_path(cluster: Kube) -> Path:
    return cluster.kubectl_path


@pytest.fixture(scope="session")
def kubectl(cluster: Kube) -> Callable[..., str]:
    """`kubectl("get", "pods", "-n", ns)` -> stdout; raises AssertionError on failure."""
    return cluster.kubectl


@pytest.fixture
def make_namespace(cluster: Kube, request: pytest.FixtureRequest) -> Iterator[Callable[[], str]]:
    """A factory of fresh namespaces, all deleted when the test ends."""
    created: list[str] = []

    def make() -> str:
        created.append(cluster.create_namespace(request.node.name))
        return created[-1]

    yield make
    for name in created:
        cluster.delete_namespace(name)


@pytest.fixture
def namespace(make_namespace: Callable[[], str]) -> str:
    """A fresh namespace for this test (usable from sync and async tests alike)."""
    return make_namespace()


@pytest.fixture(scope="session")
def runner_image(cluster: Kube) -> str:
    return RUNNER_IMAGE


@pytest.fixture(scope="session")
def operator_image(cluster: Kube) -> str:
    return OPERATOR_IMAGE


@pytest.fixture(scope="session")
def host_address(cluster: Kube) -> str:
    """The address of this machine as pods see it: bind test servers for step pods here."""
    if cluster.host_address is None:
        pytest.skip("this cluster has no node")
    return cluster.host_address
