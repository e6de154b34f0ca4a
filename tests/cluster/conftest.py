"""The cluster tier: a real kube-apiserver with etcd, controller-manager and scheduler.

The session starts that control plane (or reuses a running one, e.g. from
`make cluster-up`) and applies crds/*.yaml. Whether a node is there depends on
what was running: tests here must not need one, nor be disturbed by one.

Fixtures (tests/localcluster/fixtures.py): cluster (a tests.localcluster.kube.Kube),
kubeconfig, kubectl_path, kubectl, namespace, make_namespace.
tests/support/fixtures.py: api, operator (a `kwf operator` process), operator_args.
"""

import pytest

from tests.localcluster.fixtures import (  # noqa: F401  (fixtures, found by name)
    cluster,
    kubeconfig,
    kubectl,
    kubectl_path,
    make_namespace,
    namespace,
)
from tests.support.fixtures import api, operator, operator_args  # noqa: F401  (fixtures)


@pytest.fixture(scope="session")
def cluster_kind() -> str:
    return "control-plane"
