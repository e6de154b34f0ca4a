"""The step pod's entrypoint: ``python -m kwf.steps``.

Reads the step from the environment a pod gets:

- ``KWF_INPUTS`` and ``KWF_INPUT_0`` ... (see :mod:`kwf.steps.inputs`); or,
  without them, the JSON files named by ``KWF_SPEC``, ``KWF_PARAMS`` and
  ``KWF_STATE``;
- ``KWF_JOB``, ``KWF_NAMESPACE``, ``KWF_STEP``, ``KWF_ATTEMPT``;
- ``KWF_RESULT``: the container's terminationMessagePath (default
  ``/dev/termination-log``);
- optional ``KWF_RESULT_MESSAGE_BYTES`` and ``KWF_RESULT_BYTES``: the limits;
- the step's Secret variables (``KWF_LLM_API_KEY``, its ``env`` entries).

A step program gets its own files in a fresh directory under the temporary
directory (``$TMPDIR``: an emptyDir in a pod with a read-only root
filesystem). It runs the step and reports as :mod:`kwf.steps.results` describes.
``python -m kwf.steps prepare`` only writes the input files (and a script
step's source, as ``step.py`` or ``step.sh``) into ``$KWF_WORKDIR``: an init
container does that for a step that runs in a user's image.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pydantic

from kwf.api import Step
from kwf.engine.types import Inputs, Limits
from kwf.steps.contract import (
    ENV_ATTEMPT,
    ENV_JOB,
    ENV_NAMESPACE,
    ENV_PARAMS,
    ENV_RESULT,
    ENV_SPEC,
    ENV_STATE,
    StepError,
)
from kwf.steps.inputs import decode_inputs, has_inputs, write_inputs
from kwf.steps.results import (
    EXIT_BAD_INPUTS,
    EXIT_FAILED,
    EXIT_SUCCEEDED,
    Report,
    report_error,
    report_result,
)
from kwf.steps.run import env_from_process, run_step
from kwf.steps.script import script_argv

ENV_WORKDIR = "KWF_WORKDIR"
ENV_RESULT_MESSAGE_BYTES = "KWF_RESULT_MESSAGE_BYTES"
ENV_RESULT_BYTES = "KWF_RESULT_BYTES"
TERMINATION_LOG = "/dev/termination-log"


class BadInputs(Exception):
    """The pod cannot run the step: its inputs are missing or broken."""


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if environ is None else environ
    termination = Path(env.get(ENV_RESULT) or TERMINATION_LOG)
    if args == ["prepare"]:
        return _prepare(env, termination)
    if args:
        print(f"usage: python -m kwf.steps [prepare], not {' '.join(args)!r}", file=sys.stderr)
        return EXIT_BAD_INPUTS
    try:
        step, inputs, attempt, limits = _load(env)
    except BadInputs as exc:
        return _finish(report_error(f"cannot run the step: {exc}"), termination, EXIT_BAD_INPUTS)
    try:
        result = asyncio.run(
            run_step(step, inputs, attempt, env=env_from_process(step), limits=limits, echo=True)
        )
        report = report_result(result, limits)
    except StepError as exc:
        return _finish(report_error(exc.message), termination, EXIT_FAILED)
    except Exception as exc:  # a fault of kwf's: still report it where the operator looks
        return _finish(report_error(f"kwf failed: {type(exc).__name__}: {exc}"), termination, EXIT_FAILED)
    return _finish(report, termination, EXIT_SUCCEEDED)


def _finish(report: Report, termination: Path, code: int) -> int:
    if report.stdout is not None:
        sys.stdout.write(report.stdout)
        sys.stdout.flush()
    if code != EXIT_SUCCEEDED:
        print(json.loads(report.message)["error"], file=sys.stderr)
    termination.write_text(report.message, encoding="utf-8")
    return code


def _prepare(env: Mapping[str, str], termination: Path) -> int:
    workdir = env.get(ENV_WORKDIR)
    if not workdir:
        return _finish(
            report_error(f"cannot prepare the step: {ENV_WORKDIR} is not set"), termination, EXIT_BAD_INPUTS
        )
    try:
        decoded = decode_inputs(env)
        step = Step.model_validate(decoded.spec)
    except (ValueError, pydantic.ValidationError) as exc:
        return _finish(report_error(f"cannot prepare the step: {exc}"), termination, EXIT_BAD_INPUTS)
    write_inputs(decoded, Path(workdir))
    if step.script is not None:
        for name, text in script_argv(step.script)[1].items():
            (Path(workdir) / name).write_text(text, encoding="utf-8")
    return EXIT_SUCCEEDED


def _load(env: Mapping[str, str]) -> tuple[Step, Inputs, int, Limits]:
    if has_inputs(env):
        try:
            decoded = decode_inputs(env)
        except ValueError as exc:
            raise BadInputs(str(exc)) from None
        spec, params, state = decoded.spec, decoded.params, decoded.state
    else:
        for name in (ENV_SPEC, ENV_PARAMS, ENV_STATE):
            if not env.get(name):
                raise BadInputs(f"neither KWF_INPUTS nor {name} is set")
        spec, params, state = (_read_object(Path(env[n]), n) for n in (ENV_SPEC, ENV_PARAMS, ENV_STATE))
    try:
        step = Step.model_validate(spec)
    except pydantic.ValidationError as exc:
        raise BadInputs(f"the step spec is invalid: {exc}") from None
    job = env.get(ENV_JOB)
    if not job:
        raise BadInputs(f"{ENV_JOB} is not set")
    try:
        attempt = int(env.get(ENV_ATTEMPT) or "1")
    except ValueError:
        raise BadInputs(f"{ENV_ATTEMPT} must be a number, not {env[ENV_ATTEMPT]!r}") from None
    inputs = Inputs(job=job, namespace=env.get(ENV_NAMESPACE) or None, params=params, state=state)
    return step, inputs, attempt, _limits(env)


def _read_object(path: Path, name: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInputs(f"cannot read {name} ({path}): {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise BadInputs(f"{name} ({path}) is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadInputs(f"{name} ({path}) must hold a JSON object")
    return data


def _limits(env: Mapping[str, str]) -> Limits:
    limits = Limits()
    overrides: dict[str, int] = {}
    for name, field in (
        (ENV_RESULT_MESSAGE_BYTES, "result_message_bytes"),
        (ENV_RESULT_BYTES, "result_bytes"),
    ):
        if env.get(name):
            try:
                overrides[field] = int(env[name])
            except ValueError:
                raise BadInputs(f"{name} must be a number, not {env[name]!r}") from None
    return dataclasses.replace(limits, **overrides)
