"""The cluster-free benchmarks run at their smallest size and print their figures."""

from __future__ import annotations

from tests.support.benches import NUMBER, figure_lines, run_bench


def test_bench_plan_prints_the_time_of_a_pass() -> None:
    output = run_bench("bench.plan", timeout=120)
    figure_lines(output, rf"^\s*100 steps \({NUMBER} running\):\s+{NUMBER} ms, best\s+{NUMBER} ms$")


def test_bench_local_prints_http_and_script_overheads() -> None:
    output = run_bench("bench.local", timeout=120)
    row = (
        rf"kwf\s+{NUMBER} ms/step\s+bare\s+{NUMBER} ms/step\s+"
        rf"overhead\s+-?{NUMBER} ms/step\s+ratio\s+{NUMBER}x"
    )
    figure_lines(output, rf"^http\s+5 steps\s+{row}", rf"^script\s+2 steps\s+{row}")
