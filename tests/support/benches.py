"""Smoke runs of the benchmarks: each still runs, and prints the figures it promises.

The figures' values are not checked (a smoke run is too small to mean
anything); their presence is, so a bench broken by a change to the code it
measures fails `make test` instead of the next person who runs it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NUMBER = r"[\d,]+(?:\.\d+)?"


def run_bench(module: str, timeout: float) -> str:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'operator'}:{REPO}"}
    result = subprocess.run(
        [sys.executable, "-m", module, "--smoke"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, f"{module} --smoke exited {result.returncode}\n{output}"
    return result.stdout


def figure_lines(output: str, *patterns: str) -> list[str]:
    """The line matching each pattern, in order; a missing figure fails with the whole output."""
    found = []
    for pattern in patterns:
        match = re.search(pattern, output, re.MULTILINE)
        assert match, f"no figure matching {pattern!r} in:\n{output}"
        found.append(match.group(0))
    return found
