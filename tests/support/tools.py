"""The tools the tests use, built by `make tools` before any test runs.

A test never builds a tool: a cold build takes longer than pytest's
per-test timeout. A missing tool fails the test with the command that
builds it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TOOLS_BIN = Path(__file__).resolve().parents[2] / ".tools" / "bin"


def tool(name: str) -> Path:
    path = TOOLS_BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make tools` first", pytrace=False)
    return path
