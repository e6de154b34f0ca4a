"""What runs a step, in a step pod and on this machine alike: script, container, http, llm.

The entry points: :func:`run_step` runs one attempt and returns its
:class:`~kwf.engine.types.Result` (raising :class:`StepError` when the step
fails); ``python -m kwf.steps`` is the step pod's entrypoint;
:func:`encode_inputs` and :func:`read_report` are the operator's side of
the pod contract. The http and llm modules (and their clients) are imported
only when such a step runs: importing ``openai`` takes seconds.
"""

from kwf.steps.contract import ENV_LLM_API_KEY, StepError
from kwf.steps.framing import FrameError, frame, unframe
from kwf.steps.inputs import StepInputs, decode_inputs, encode_inputs
from kwf.steps.results import (
    EXIT_BAD_INPUTS,
    EXIT_FAILED,
    EXIT_SUCCEEDED,
    Failure,
    Framed,
    read_framed,
    read_report,
)
from kwf.steps.run import SecretEnv, run_step, secret_refs

__all__ = [
    "ENV_LLM_API_KEY",
    "EXIT_BAD_INPUTS",
    "EXIT_FAILED",
    "EXIT_SUCCEEDED",
    "Failure",
    "FrameError",
    "Framed",
    "SecretEnv",
    "StepError",
    "StepInputs",
    "decode_inputs",
    "encode_inputs",
    "frame",
    "read_framed",
    "read_report",
    "run_step",
    "secret_refs",
    "unframe",
]
