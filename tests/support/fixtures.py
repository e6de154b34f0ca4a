"""pytest fixtures shared by the cluster and e2e tiers: an API client, and the
operator as a real process watching the test's namespace.

A module changes how the operator starts by overriding ``operator_args``
(``["--inline"]``, ``["--runner-image", ...]``); the operator's log is printed
after each test, so a failure shows what the operator saw.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from kwf.k8s.api import Client, load_kubeconfig
from tests.support.operator_process import OperatorProcess

LOG_LINES = 300


@pytest.fixture
async def api(kubeconfig: Path) -> AsyncIterator[Client]:
    async with Client(load_kubeconfig(kubeconfig)) as client:
        yield client


@pytest.fixture
def operator_args() -> list[str]:
    """Extra ``kwf operator`` arguments; override it in a module."""
    return []


@pytest.fixture
def operator(
    kubeconfig: Path, namespace: str, tmp_path: Path, operator_args: list[str]
) -> Iterator[OperatorProcess]:
    """``kwf operator --namespace <the test's>``, started and ready."""
    process = OperatorProcess(
        kubeconfig, tmp_path / "operator.log", namespaces=[namespace], extra_args=operator_args
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()
        print(f"----- operator log, last lines ({process.log_file}) -----\n{process.tail(LOG_LINES)}")
