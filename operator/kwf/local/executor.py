"""The local executor: step attempts as asyncio tasks on this machine.

Script steps (and container steps of the runner image) run as child
processes; http and llm steps run in this process. Nothing here decides what
to run or when: :func:`kwf.engine.plan` does, and it also holds the
parallelism limit, so the executor starts whatever it is told to.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import httpx2

from kwf.engine.types import Attempt, AttemptPhase, Launch, Limits, Observed, Result, Stop
from kwf.steps import ENV_LLM_API_KEY, StepError, run_step
from kwf.steps.container import ENV_RUNNER_IMAGE, runs_here
from kwf.steps.http import CircuitBreakers

Clock = Callable[[], datetime]

#: The runner image's programs are the ones installed here, so a container
#: step of that image runs as a local process (see kwf.steps.container).
DEFAULT_RUNNER_IMAGE = "kwf.local/runner:dev"
#: A Secret key a step needs is read from $KWF_SECRET_<NAME>_<KEY> on this machine.
SECRET_ENV_PREFIX = "KWF_SECRET_"


def utcnow() -> datetime:
    return datetime.now(UTC)


def secret_env_name(name: str, key: str) -> str:
    """``KWF_SECRET_OPENAI_API_KEY`` for key ``api-key`` of Secret ``openai``."""
    return SECRET_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", f"{name}_{key}").upper()


@dataclasses.dataclass
class _Record:
    """One attempt: its task while it runs, its outcome once it ended."""

    launch: Launch
    started_at: datetime
    task: asyncio.Task[None] | None = None
    phase: AttemptPhase = AttemptPhase.RUNNING
    finished_at: datetime | None = None
    result: Result | None = None
    message: str | None = None
    value: Attempt | None = None  # built once per change: observe() runs every pass

    def attempt(self) -> Attempt:
        if self.value is None:
            self.value = self._attempt()
        return self.value

    def _attempt(self) -> Attempt:
        return Attempt(
            step=self.launch.step.name,
            number=self.launch.number,
            phase=self.phase,
            started_at=self.started_at,
            finished_at=self.finished_at,
            result=self.result,
            message=self.message,
            child=f"{self.launch.step.name}-{self.launch.number}",
        )


class LocalExecutor:
    """Runs the attempts of one run; implements :class:`kwf.engine.types.Executor`.

    ``environ`` is where secrets are looked up (``$KWF_SECRET_<NAME>_<KEY>``);
    it defaults to this process's environment. Nothing else of it reaches a
    step: script steps get the step contract's environment only.
    """

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        clock: Clock = utcnow,
        environ: Mapping[str, str] | None = None,
        allow_container_local: bool = False,
        runner_image: str | None = None,
    ) -> None:
        self._limits = limits or Limits()
        self._clock = clock
        self._environ = dict(os.environ if environ is None else environ)
        self._allow_container_local = allow_container_local
        self._runner_image = runner_image or self._environ.get(ENV_RUNNER_IMAGE) or DEFAULT_RUNNER_IMAGE
        self._records: dict[tuple[str, int], _Record] = {}
        self._changed = asyncio.Event()
        # One client and one set of breakers for the whole run: connections are
        # reused between http steps, as the operator's inline runner does.
        self._http: httpx2.AsyncClient | None = None
        self._breakers = CircuitBreakers()

    # ------------------------------------------------------------ the protocol

    async def launch(self, action: Launch) -> None:
        key = (action.step.name, action.number)
        if key in self._records:
            return  # launched already: the same attempt is never started twice
        record = _Record(launch=action, started_at=self._clock())
        self._records[key] = record
        record.task = asyncio.create_task(self._run(record), name=f"kwf-{key[0]}-{key[1]}")

    async def stop(self, action: Stop) -> None:
        record = self._records.get((action.step, action.number))
        if record is None or record.task is None or record.task.done():
            return
        record.task.cancel()
        # Wait for the task to end, so its process group is gone when we return.
        with contextlib.suppress(asyncio.CancelledError):
            await record.task
        if record.phase is AttemptPhase.RUNNING:
            self._finish(record, AttemptPhase.FAILED, message=f"stopped: {action.reason}")

    def observe(self) -> Observed:
        observed: dict[str, list[Attempt]] = {}
        for (step, _), record in self._records.items():
            observed.setdefault(step, []).append(record.attempt())
        return observed

    # ------------------------------------------------------------- the loop's

    @property
    def running(self) -> int:
        """Attempts started and not yet ended."""
        return sum(1 for r in self._records.values() if r.phase is AttemptPhase.RUNNING)

    async def wait(self, seconds: float | None) -> bool:
        """Sleep until an attempt ends or ``seconds`` pass (None: no limit); True if one ended.

        Call :meth:`changes_seen` before observing, so that an attempt ending
        between the observation and this wait still wakes it.
        """
        if self._changed.is_set():
            return True
        if seconds is not None and seconds <= 0:
            return False
        try:
            await asyncio.wait_for(self._changed.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def changes_seen(self) -> None:
        self._changed.clear()

    def wake(self) -> None:
        """End the current :meth:`wait` early (something outside changed)."""
        self._changed.set()

    def has(self, step: str, number: int) -> bool:
        """Whether that attempt was launched already."""
        return (step, number) in self._records

    async def close(self) -> None:
        """Stop every attempt still running (the run ended or was interrupted)."""
        tasks = [r.task for r in self._records.values() if r.task is not None and not r.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # ------------------------------------------------------------------ inner

    async def _run(self, record: _Record) -> None:
        launch = record.launch
        step = launch.step
        local_container = step.container is not None and runs_here(
            step.container.image, runner_image=self._runner_image, allow_local=self._allow_container_local
        )
        if step.http is not None and self._http is None:
            self._http = httpx2.AsyncClient()
        try:
            result = await run_step(
                step,
                launch.inputs,
                launch.number,
                env=self._step_env(launch),
                time_limit=launch.timeout_seconds,
                limits=self._limits,
                http_client=self._http,
                breakers=self._breakers,
                allow_container_local=local_container,
            )
        except StepError as exc:
            self._finish(record, AttemptPhase.FAILED, message=exc.message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an unexpected error must still end the attempt
            self._finish(record, AttemptPhase.FAILED, message=f"{type(exc).__name__}: {exc}")
        else:
            self._finish(record, AttemptPhase.SUCCEEDED, result=result)

    def _finish(
        self,
        record: _Record,
        phase: AttemptPhase,
        *,
        result: Result | None = None,
        message: str | None = None,
    ) -> None:
        record.phase = phase
        record.finished_at = self._clock()
        record.result = result
        record.message = message
        record.value = None
        self._changed.set()

    def _step_env(self, launch: Launch) -> dict[str, str]:
        """Secret values a step declared, looked up on this machine; missing ones
        are left out, so the step fails naming what it lacks."""
        env: dict[str, str] = {}
        step = launch.step
        for var in step.env or ():
            ref = var.secret_key_ref
            if ref is not None and (value := self._environ.get(secret_env_name(ref.name, ref.key))):
                env[var.name] = value
        ref = step.llm.api_key_secret_ref if step.llm is not None else None
        if ref is not None:
            key = self._environ.get(secret_env_name(ref.name, ref.key)) or self._environ.get(ENV_LLM_API_KEY)
            if key:
                env[ENV_LLM_API_KEY] = key
        return env
