"""The local test cluster: a real control plane and a real node on this machine.

Used by `make cluster-up` / `make cluster-down` (through `python -m
tests.localcluster`) and by the test sessions of tests/cluster and tests/e2e
(through tests.localcluster.fixtures), so both run exactly the same code.
"""

from .cluster import down, status, up
from .layout import (
    NODE_NAME,
    OPERATOR_IMAGE,
    PAUSE_IMAGE,
    POD_GATEWAY,
    RUNNER_IMAGE,
    Layout,
    host_address,
)
from .procs import ClusterError

__all__ = [
    "NODE_NAME",
    "OPERATOR_IMAGE",
    "PAUSE_IMAGE",
    "POD_GATEWAY",
    "RUNNER_IMAGE",
    "ClusterError",
    "Layout",
    "down",
    "host_address",
    "status",
    "up",
]
