"""How a step pod reports, and how the operator reads the report.

The termination message (at most 4 KiB, read first) is one of:

- the result itself: ``{"output": ..., "state": ..., "steps": ..., "usage": ...}``;
- ``{"framed": true, "bytes": N, "sha256": "<hex>"}``: the result is framed
  on standard output (see :mod:`kwf.steps.framing`), read it from the pod log;
- ``{"error": "..."}``: the step failed, and why.

Exit codes: 0 the step succeeded; 1 the step failed (its own failure, which
spends its retry budget); 2 the pod could not run the step at all (its
inputs are missing or broken: kwf's fault, not the step's).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from kwf.engine.types import Limits, Result
from kwf.steps.contract import DEFAULT_LIMITS, StepError
from kwf.steps.framing import FrameError, frame, unframe

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_BAD_INPUTS = 2

#: Room left in the 4 KiB termination message for the JSON around an error.
_ERROR_ROOM = 3800


@dataclasses.dataclass(frozen=True)
class Report:
    """What the pod writes: the termination message, and a frame for stdout if any."""

    message: str
    stdout: str | None = None


@dataclasses.dataclass(frozen=True)
class Framed:
    """The termination message says the result is framed in the log."""

    bytes: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class Failure:
    message: str


def report_result(result: Result, limits: Limits = DEFAULT_LIMITS) -> Report:
    """The report of a success; raises StepError naming both sizes over the cap."""
    data = json.dumps(result.to_json(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(data) <= limits.result_message_bytes:
        return Report(message=data.decode("utf-8"))
    if len(data) > limits.result_bytes:
        raise StepError(f"the result is {len(data)} bytes, over the cap of {limits.result_bytes} bytes")
    note = {"framed": True, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return Report(message=json.dumps(note), stdout=frame(data))


def report_error(message: str) -> Report:
    """The report of a failure, cut in the middle to fit the termination message:
    the beginning says what failed, the end usually says why."""
    encoded = json.dumps({"error": message})
    keep = len(message)
    while len(encoded.encode("utf-8")) > _ERROR_ROOM:
        keep = keep * 3 // 4
        encoded = json.dumps({"error": f"{message[: keep // 2]} ... {message[-(keep // 2) :]}"})
    return Report(message=encoded)


def over_cap(size: int, cap: int) -> Failure:
    return Failure(f"the result is {size} bytes, over the cap of {cap} bytes")


def read_report(message: str, exit_code: int, *, result_cap: int | None = None) -> Result | Framed | Failure:
    """What a finished step pod said, from its termination message and exit code.

    ``result_cap`` is the reader's own cap on a framed result: a pod's
    environment may say anything, the reader never takes more than this."""
    text = message.strip()
    data: Any = None
    if text:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
    if exit_code != 0:
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            return Failure(data["error"])
        return Failure(text[-1000:] if text else f"the step exited with code {exit_code}")
    if not text:
        return Result()
    if not isinstance(data, dict):
        return Failure("the step's termination message is not a JSON object")
    if data.get("framed") is True:
        try:
            framed = Framed(bytes=int(data["bytes"]), sha256=str(data["sha256"]))
        except (KeyError, TypeError, ValueError):
            return Failure("the step's termination message announces a framed result but is incomplete")
        if result_cap is not None and framed.bytes > result_cap:
            return over_cap(framed.bytes, result_cap)
        return framed
    try:
        return Result.from_json(data)
    except (ValueError, TypeError, AttributeError) as exc:
        return Failure(f"bad step result: {exc}")


def read_framed(framed: Framed, log_text: str, *, result_cap: int | None = None) -> Result | Failure:
    """The framed result from the pod's log (at most ``result_cap`` bytes of it)."""
    if result_cap is not None and framed.bytes > result_cap:
        return over_cap(framed.bytes, result_cap)
    try:
        data = unframe(log_text, sha256=framed.sha256)
    except FrameError as exc:
        return Failure(f"the step's result in its log is broken: {exc}")
    if data is None:
        return Failure(f"the step's result ({framed.bytes} bytes) is missing from its log")
    if result_cap is not None and len(data) > result_cap:
        return over_cap(len(data), result_cap)
    try:
        return Result.from_json(json.loads(data))
    except (ValueError, TypeError, AttributeError) as exc:
        return Failure(f"bad step result: {exc}")
