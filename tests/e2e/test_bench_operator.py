"""bench.operator runs on the local cluster at its smallest size and prints every figure.

It starts its own operator and bare client (namespaces bench-kwf and
bench-bare, removed after), as `make bench-operator` does.
"""

from __future__ import annotations

import pytest

from tests.localcluster.kube import Kube
from tests.support.benches import figure_lines, run_bench

FIGURES = (
    r"step period, 3-step chain \(mean of 2\)\s+\d+ ms\s+\d+ ms\s+[\d.]+x",
    r"API writes per step \(kwf\): \(chain - 1-step run\) / 2\s+[\d.]+",
    r"kwf's own time per step p50, 2 runs x 2 steps\s+[\d.]+ ms \(n=\d+\)",
    r"kwf's own time per step p99, 2 runs x 2 steps\s+[\d.]+ ms \(n=\d+\)",
    r"burst of 3 single-step runs \(mean of 2\)\s+[\d.]+ s\s+[\d.]+ s\s+[\d.]+x",
    r"inline runs per minute \(10 runs\)\s+[\d,]+",
    r"API writes per inline run \(kwf\)\s+[\d.]+",
    r"operator RSS \(peak\)\s+\d+ MB \(\d+\)",
)


@pytest.mark.timeout(900)
def test_bench_operator_prints_every_figure(cluster: Kube) -> None:
    output = run_bench("bench.operator", timeout=840)
    figure_lines(output, *FIGURES)
