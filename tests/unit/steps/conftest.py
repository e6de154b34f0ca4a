from __future__ import annotations

from typing import Any

import pytest

from kwf.api import Step
from kwf.engine.types import Inputs


def make_step(**fields: Any) -> Step:
    return Step.model_validate({"name": "s", **fields})


@pytest.fixture
def inputs() -> Inputs:
    return Inputs(job="run-1", namespace="ns", params={"repo": "nolar/kopf"}, state={"counter": 1})
