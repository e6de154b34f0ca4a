"""Run a program under the step contract: files in, JSON result out.

Shared by script steps and by container steps run on this machine. The
program gets a minimal environment, its own temporary directory (also its
``HOME`` and ``TMPDIR``), a timeout, and bounded capture of its output.

The answer is the JSON the program writes to ``$KWF_RESULT``:
``{"output": ..., "state": <merge patch>, "steps": [...]}``. A program that
writes no result file answers with its standard output as a string, with
surrounding whitespace removed (not parsed as JSON: ``echo 42`` gives
``"42"``). Standard output beyond the result cap fails the step unless a
result file was written, so an output is never silently cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from kwf.api import Step
from kwf.engine.types import Inputs, Limits, Result
from kwf.steps.contract import (
    DEFAULT_LIMITS,
    ENV_ATTEMPT,
    ENV_JOB,
    ENV_NAMESPACE,
    ENV_PARAMS,
    ENV_RESULT,
    ENV_STATE,
    ENV_STEP,
    StepError,
)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Characters of standard error quoted in a failure message.
STDERR_TAIL = 800
_CHUNK = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Finished:
    """How a program ended and what it printed (bounded)."""

    exit_code: int
    stdout: bytes
    stdout_overflow: bool  # more than the cap was printed
    stderr_tail: bytes


def step_env(
    step: Step,
    inputs: Inputs,
    attempt: int,
    *,
    home: Path,
    files: Mapping[str, Path],
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The whole environment of a step's program: nothing leaks from ours but PATH."""
    env = {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        "HOME": str(home),
        "TMPDIR": str(home),
        "LANG": "C.UTF-8",
        ENV_JOB: inputs.job,
        ENV_STEP: step.name,
        ENV_ATTEMPT: str(attempt),
    }
    if inputs.namespace:
        env[ENV_NAMESPACE] = inputs.namespace
    env.update({name: str(path) for name, path in files.items()})
    for var in step.env or ():
        if var.value is not None:
            env[var.name] = var.value
    # Declared secretKeyRef variables arrive here, already resolved by the caller.
    env.update(extra or {})
    return env


async def run_under_contract(
    argv: Sequence[str],
    step: Step,
    inputs: Inputs,
    attempt: int,
    *,
    extra_env: Mapping[str, str] | None = None,
    time_limit: float | None = None,
    limits: Limits = DEFAULT_LIMITS,
    files: Mapping[str, str] | None = None,
    echo: bool = False,
) -> Result:
    """Run ``argv`` with ``$KWF_PARAMS``/``$KWF_STATE`` files and read its answer.

    ``files`` are written into the program's directory first (name -> text),
    e.g. a script's source; ``argv`` may name them relative to that directory.
    """
    home = Path(tempfile.mkdtemp(prefix=f"kwf-{step.name}-"))
    try:
        params_file = home / "params.json"
        state_file = home / "state.json"
        result_file = home / "result.json"
        params_file.write_text(json.dumps(dict(inputs.params)), encoding="utf-8")
        state_file.write_text(json.dumps(dict(inputs.state)), encoding="utf-8")
        for name, text in (files or {}).items():
            (home / name).write_text(text, encoding="utf-8")
        env = step_env(
            step,
            inputs,
            attempt,
            home=home,
            files={ENV_PARAMS: params_file, ENV_STATE: state_file, ENV_RESULT: result_file},
            extra=extra_env,
        )
        finished = await run_program(
            argv, env=env, cwd=home, time_limit=time_limit, stdout_cap=limits.result_bytes, echo=echo
        )
        return read_answer(finished, result_file, limits)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def read_answer(finished: Finished, result_file: Path, limits: Limits) -> Result:
    if finished.exit_code != 0:
        raise StepError(_failure_message(finished))
    if result_file.exists():
        size = result_file.stat().st_size
        if size > limits.result_bytes:
            raise StepError(
                f"the result in $KWF_RESULT is {size} bytes, over the cap of {limits.result_bytes} bytes"
            )
        text = result_file.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise StepError(f"$KWF_RESULT is not valid JSON: {exc}") from None
            try:
                return Result.from_json(data)
            except (ValueError, TypeError, AttributeError) as exc:
                raise StepError(f"bad result in $KWF_RESULT: {exc}") from None
    if finished.stdout_overflow:
        raise StepError(
            f"standard output is over {limits.result_bytes} bytes and no result was written to "
            "$KWF_RESULT; write large outputs there as JSON"
        )
    return Result(output=finished.stdout.decode("utf-8", errors="replace").strip())


def _failure_message(finished: Finished) -> str:
    code = finished.exit_code
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    tail = finished.stderr_tail.decode("utf-8", errors="replace").strip()
    if len(tail) > STDERR_TAIL:
        tail = "..." + tail[-STDERR_TAIL:]
    return f"the step {how}: {tail}" if tail else f"the step {how}"


async def run_program(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    time_limit: float | None,
    stdout_cap: int,
    echo: bool = False,
) -> Finished:
    """Run a program in its own process group; on timeout the whole group is killed."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise StepError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from None
    stdout = _Capture(stdout_cap, keep="head", echo=sys.stdout.buffer if echo else None)
    stderr = _Capture(16 * 1024, keep="tail", echo=sys.stderr.buffer if echo else None)

    async def finish() -> int:
        assert proc.stdout is not None and proc.stderr is not None
        drains = asyncio.gather(stdout.drain(proc.stdout), stderr.drain(proc.stderr))
        try:
            code = await proc.wait()
            try:
                await asyncio.wait_for(asyncio.shield(drains), 5)
            except TimeoutError:
                # A background child still holds the pipes: the step is over, so is it.
                _kill_group(proc.pid)
                await drains
            return code
        finally:
            drains.cancel()

    try:
        exit_code = await asyncio.wait_for(finish(), time_limit)
    except (TimeoutError, asyncio.CancelledError) as exc:
        _kill_group(proc.pid)
        await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise StepError(f"the step timed out after {time_limit:g} seconds") from None
    _kill_group(proc.pid)  # what the step left running in the background
    return Finished(exit_code, stdout.data(), stdout.overflow, stderr.data())


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class _Capture:
    """Reads a pipe to its end, keeping at most ``cap`` bytes (its head or its tail)."""

    def __init__(self, cap: int, *, keep: str, echo: IO[bytes] | None) -> None:
        self.cap = cap
        self.keep = keep
        self.echo = echo
        self.buffer = bytearray()
        self.overflow = False

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_CHUNK):
            if self.echo is not None:
                self.echo.write(chunk)
                self.echo.flush()
            self.buffer += chunk
            if len(self.buffer) > self.cap:
                self.overflow = True
                if self.keep == "head":
                    del self.buffer[self.cap :]
                else:
                    del self.buffer[: len(self.buffer) - self.cap]

    def data(self) -> bytes:
        return bytes(self.buffer)
