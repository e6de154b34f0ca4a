"""The e2e tier: the local cluster with its real node (kubelet, containerd, runc).

`--cluster=local` (the default) builds the images if they are out of date and
starts the local cluster or reuses it; `--cluster=kind` uses a kind cluster
through pytest-kind instead, where Docker is usable (else the tests skip).
KWF_E2E_CLUSTER=kind does the same as the option.

Fixtures (tests/localcluster/fixtures.py): cluster (a tests.localcluster.kube.Kube),
kubeconfig, kubectl_path, kubectl, namespace, make_namespace, runner_image,
operator_image, host_address (where pods reach a server a test runs here).
tests/support/fixtures.py: api, operator (a `kwf operator` process), operator_args.
"""

import os

import pytest

from tests.localcluster.fixtures import (  # noqa: F401  (fixtures, found by name)
    cluster,
    host_address,
    kubeconfig,
    kubectl,
    kubectl_path,
    make_namespace,
    namespace,
    operator_image,
    runner_image,
)
from tests.support.fixtures import api, operator, operator_args  # noqa: F401  (fixtures)

CLUSTERS = ("local", "kind")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cluster",
        choices=CLUSTERS,
        default=None,
        help="e2e: the local cluster built here (default) or a kind cluster",
    )


@pytest.fixture(scope="session")
def cluster_kind(request: pytest.FixtureRequest) -> str:
    # The option exists only when this conftest was loaded at start-up
    # (`pytest tests/e2e`); the variable works however pytest was started.
    chosen = request.config.getoption("--cluster", default=None) or os.environ.get("KWF_E2E_CLUSTER", "local")
    if chosen not in CLUSTERS:
        raise pytest.UsageError(f"--cluster must be one of {CLUSTERS}, not {chosen!r}")
    return str(chosen)
