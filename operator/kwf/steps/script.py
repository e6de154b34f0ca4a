"""Script steps: Python or shell source run as a program under the step contract.

Python runs with the interpreter that runs kwf, isolated (``-I``: no user
site-packages, no ``PYTHON*`` variables from outside); shell runs with
``/bin/sh -eu``. See :mod:`kwf.steps.process` for the environment and how the
answer is read.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from kwf.api import ScriptStep, Step
from kwf.engine.types import Inputs, Limits, Result
from kwf.steps.contract import DEFAULT_LIMITS
from kwf.steps.process import run_under_contract

SHELL = "/bin/sh"


def script_argv(script: ScriptStep) -> tuple[list[str], dict[str, str]]:
    """The command line and the files it needs, relative to the step's directory."""
    if script.language == "python":
        return [sys.executable, "-I", "step.py"], {"step.py": script.source}
    return [SHELL, "-eu", "step.sh"], {"step.sh": script.source}


async def run_script(
    step: Step,
    inputs: Inputs,
    attempt: int,
    *,
    env: Mapping[str, str] | None = None,
    time_limit: float | None = None,
    limits: Limits = DEFAULT_LIMITS,
    echo: bool = False,
) -> Result:
    assert step.script is not None
    argv, files = script_argv(step.script)
    return await run_under_contract(
        argv,
        step,
        inputs,
        attempt,
        extra_env=env,
        time_limit=time_limit,
        limits=limits,
        files=files,
        echo=echo,
    )
