"""Steps with ``executor: inline`` (http and llm), run inside the operator.

With ``--inline`` such a step's attempt is an asyncio task here instead of a
pod: milliseconds instead of a pod start. At most ``concurrency`` attempts
talk to the outside at once; the rest wait for a slot, namespace by namespace
in turn (and count as running). Each attempt is kept in memory as an engine
:class:`Attempt` and merged into what the controller observes for its run;
its end wakes the run's reconcile.

Only http and llm steps run here, checked again at each launch: a step that
another step returned is not admitted by the API server, so its executor is
trusted no further than its type. An attempt has a hard time limit that counts
its wait for a slot and its in-step retries alike; its requests go through the
operator's network policy (kwf.operator.network), keep no cookies, and open
circuits per namespace and host.

Restart safety: an attempt that the run's status says was started, and that
neither this process nor the child index knows, ran in an operator that has
since stopped. It is reported LOST, so the engine launches it again without
spending the step's retry budget.

Without ``--inline`` such steps run in pods as usual; the run says so once,
in the operator's log and an Event.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx2

from kwf.api import Executor, JobSpec, JobStatus, Step, StepPhase
from kwf.engine.types import Attempt, AttemptPhase, Launch, Limits, Observed, Result, Stop
from kwf.k8s.index import RunKey
from kwf.k8s.manifests import Owner
from kwf.operator.events import EventRecorder
from kwf.operator.network import NetworkPolicy
from kwf.operator.slots import FairSlots
from kwf.operator.step_secrets import SecretCache
from kwf.steps import StepError, secret_refs
from kwf.steps.http import CircuitBreakers, run_http
from kwf.steps.transport import bounded_client

JSON = Any
Clock = Callable[[], datetime]
logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 32
#: The time limit of an inline attempt whose step sets no ``timeoutSeconds``.
DEFAULT_ATTEMPT_SECONDS = 600.0
LOST_MESSAGE = "the operator that ran it inline stopped before it ended"


def utcnow() -> datetime:
    return datetime.now(UTC)


def inline_steps(spec: JobSpec, status: JobStatus) -> set[str]:
    """Names of the run's steps with ``executor: inline``, added steps included."""
    names = {step.name for step in spec.steps or () if step.executor is Executor.INLINE}
    for added in status.added_steps:
        if isinstance(added, Mapping) and added.get("executor") == Executor.INLINE.value:
            names.add(str(added.get("name")))
    return names


def lost_attempts(
    spec: JobSpec, status: JobStatus, observed: Observed, known: Iterable[tuple[str, int]], now: datetime
) -> dict[str, Attempt]:
    """Inline attempts the status has running that nothing here knows: LOST, by step."""
    inline = inline_steps(spec, status)
    if not inline:
        return {}
    here = set(known)
    lost = {}
    for entry in status.steps:
        number = entry.last_attempt
        if entry.name not in inline or entry.phase is not StepPhase.RUNNING or number < 1:
            continue
        if (entry.name, number) in here or any(a.number == number for a in observed.get(entry.name, ())):
            continue
        lost[entry.name] = Attempt(
            step=entry.name,
            number=number,
            phase=AttemptPhase.LOST,
            started_at=entry.started_at,
            finished_at=now,
            message=LOST_MESSAGE,
        )
    return lost


@dataclasses.dataclass
class _Record:
    launch: Launch
    run: RunKey
    started_at: datetime
    task: asyncio.Task[None] | None = None
    attempt: Attempt | None = None  # rebuilt on each change: observe() runs every pass

    @property
    def phase(self) -> AttemptPhase:
        return self.attempt.phase if self.attempt is not None else AttemptPhase.RUNNING


class InlineRunner:
    """The operator's inline executor, for every run it reconciles.

    ``wake`` is called with the run's key when an attempt ends. Disabled (no
    ``--inline``), it runs nothing and only tells once per run that its
    inline steps go to pods.
    """

    def __init__(
        self,
        wake: Callable[[RunKey], None],
        *,
        enabled: bool,
        secrets: SecretCache | None = None,
        events: EventRecorder | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        limits: Limits | None = None,
        network: NetworkPolicy | None = None,
        attempt_seconds: float = DEFAULT_ATTEMPT_SECONDS,
        clock: Clock = utcnow,
    ) -> None:
        self.enabled = enabled
        self._wake = wake
        self._secrets = secrets
        self._events = events
        self._slots = FairSlots(concurrency)
        self._limits = limits or Limits()
        self._network = network or NetworkPolicy()
        self._attempt_seconds = attempt_seconds
        self._clock = clock
        self._runs: dict[str, dict[tuple[str, int], _Record]] = {}  # run uid -> attempts
        self._told: set[str] = set()  # runs told that their inline steps run in pods
        self._http: httpx2.AsyncClient | None = None
        self._breakers: dict[str, CircuitBreakers] = {}  # by namespace
        self._warming: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ controller

    def launch(self, owner: Owner, launch: Launch) -> bool:
        """Start ``launch`` here if it is an inline step; False: it goes to a pod."""
        if launch.step.executor is not Executor.INLINE:
            return False
        if not self.enabled:
            self._tell_in_pod(owner, launch.step)
            return False
        attempts = self._runs.setdefault(owner.uid, {})
        key = (launch.step.name, launch.number)
        if key in attempts:
            return True  # launched already: never started twice
        record = _Record(launch=launch, run=RunKey(owner.namespace, owner.name), started_at=self._clock())
        attempts[key] = record
        refusal = not_inline(launch.step)
        if refusal is not None:
            self._finish(record, AttemptPhase.FAILED, message=refusal)
            return True  # refused here, and never handed to anything that runs scripts
        record.task = asyncio.get_running_loop().create_task(
            self._run(record), name=f"inline {owner.namespace}/{owner.name} {key[0]}-{key[1]}"
        )
        return True

    async def stop(self, owner: Owner, stop: Stop) -> bool:
        """Stop an inline attempt; False when it is not one of ours."""
        record = self._runs.get(owner.uid, {}).get((stop.step, stop.number))
        if record is None:
            return False
        if record.task is not None and not record.task.done():
            record.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await record.task
        if record.phase is AttemptPhase.RUNNING:
            self._finish(record, AttemptPhase.FAILED, message=f"stopped: {stop.reason}")
        return True

    def observe(self, uid: str, spec: JobSpec, status: JobStatus, observed: Observed) -> Observed:
        """``observed`` (the child index's) with this run's inline attempts and lost ones added."""
        mine = self._runs.get(uid, {})
        lost = lost_attempts(spec, status, observed, mine, self._clock())
        if not mine and not lost:
            return observed
        merged = {step: list(attempts) for step, attempts in observed.items()}
        for record in mine.values():
            merged.setdefault(record.launch.step.name, []).append(self._attempt(record))
        for step, attempt in lost.items():
            merged.setdefault(step, []).append(attempt)
        return merged

    async def settle(self, uid: str, attempts: Iterable[tuple[str, int]], within: float) -> bool:
        """Wait up to ``within`` seconds for those of these attempts that run here
        to end; True when all of them have (none of them here: False)."""
        mine = self._runs.get(uid, {})
        records = [mine[key] for key in attempts if key in mine]
        tasks = [record.task for record in records if record.task is not None]
        if not tasks:
            return False
        _, pending = await asyncio.wait(tasks, timeout=within)
        return not pending

    def forget_run(self, uid: str) -> None:
        """The run finished or is gone: drop its attempts, stopping any still running."""
        for record in self._runs.pop(uid, {}).values():
            if record.task is not None and not record.task.done():
                record.task.cancel()
        self._told.discard(uid)

    @property
    def running(self) -> int:
        return sum(1 for run in self._runs.values() for r in run.values() if r.phase is AttemptPhase.RUNNING)

    def warm_up(self) -> None:
        """Import the llm client off the event loop (it takes seconds), once."""
        if self.enabled and self._warming is None:

            async def warm() -> None:
                await asyncio.to_thread(importlib.import_module, "kwf.steps.llm")

            self._warming = asyncio.get_running_loop().create_task(warm(), name="import llm client")

    async def close(self) -> None:
        tasks = [r.task for run in self._runs.values() for r in run.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._warming is not None:
            await asyncio.gather(self._warming, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()

    # --------------------------------------------------------------- running

    async def _run(self, record: _Record) -> None:
        launch = record.launch
        namespace = record.run.namespace
        env: dict[str, str] = {}
        limit = launch.timeout_seconds or self._attempt_seconds
        loop = asyncio.get_running_loop()
        queued, started = loop.time(), None
        deadline = asyncio.timeout(limit)
        try:
            async with deadline, self._slots.slot(namespace):
                started = loop.time()
                env = await self._env(launch.step, namespace)
                result = await self._call(launch.step, namespace, env)
            self._check_size(result)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            if not deadline.expired():
                raise
            late = self._late(limit, queued, started, default=not launch.timeout_seconds)
            self._finish(record, AttemptPhase.FAILED, message=late)
        except StepError as error:
            self._finish(record, AttemptPhase.FAILED, message=_redact(error.message, env))
        except Exception as error:  # a bug here must fail the attempt, not the operator
            logger.exception("inline step %s of %s crashed", launch.step.name, record.run)
            message = _redact(f"the step crashed in the operator: {type(error).__name__}: {error}", env)
            self._finish(record, AttemptPhase.FAILED, message=message[:1000])
        else:
            self._finish(record, AttemptPhase.SUCCEEDED, result=result)

    async def _call(self, step: Step, namespace: str, env: Mapping[str, str]) -> Result:
        """The step's one request; only http and llm ever get here."""
        if step.http is not None:
            breakers = self._breakers.setdefault(namespace, CircuitBreakers())
            return await run_http(step.http, client=self._client(), breakers=breakers)
        if step.llm is not None:
            from kwf.steps.llm import run_llm

            return await run_llm(step.llm, env=env, http_client=self._client())
        raise StepError(not_inline(step) or f"step {step.name!r} has no type")

    def _late(self, limit: float, queued: float, started: float | None, *, default: bool) -> str:
        source = "the operator's limit for steps without timeoutSeconds" if default else "timeoutSeconds"
        if started is None:
            return (
                f"the attempt waited {limit:g} s for an inline slot without getting one "
                f"(the operator runs {self._slots.size} inline attempts at once); "
                f"its time limit ({source}) counts the wait"
            )
        return (
            f"the step timed out after {limit:g} s, {started - queued:.1f} s of them "
            f"waiting for an inline slot (its time limit, {source}, counts the wait and the retries)"
        )

    async def _env(self, step: Step, namespace: str) -> dict[str, str]:
        refs = secret_refs(step)
        if not refs:
            return {}
        if self._secrets is None:
            raise StepError("this operator cannot read Secrets")
        env = {}
        for ref in refs:
            field = "llm.apiKeySecretRef" if step.llm is not None else f"env.{ref.name}"
            env[ref.name] = await self._secrets.value(namespace, ref.ref.name, ref.ref.key, field=field)
        return env

    def _client(self) -> httpx2.AsyncClient:
        if self._http is None:
            # One connection per slot at most; no cookie jar; every address checked.
            self._http = bounded_client(
                check=self._network.refusal, max_connections=self._slots.size, follow_redirects=True
            )
        return self._http

    def _check_size(self, result: Result) -> None:
        size = len(json.dumps(result.to_json(), default=str).encode())
        if size > self._limits.result_bytes:
            raise StepError(f"the step's result is {size} bytes, over the cap of {self._limits.result_bytes}")

    def _finish(
        self,
        record: _Record,
        phase: AttemptPhase,
        *,
        result: Result | None = None,
        message: str | None = None,
    ) -> None:
        record.attempt = Attempt(
            step=record.launch.step.name,
            number=record.launch.number,
            phase=phase,
            started_at=record.started_at,
            finished_at=self._clock(),
            result=result,
            message=message,
        )
        self._wake(record.run)

    def _attempt(self, record: _Record) -> Attempt:
        if record.attempt is None:
            record.attempt = Attempt(
                step=record.launch.step.name,
                number=record.launch.number,
                phase=AttemptPhase.RUNNING,
                started_at=record.started_at,
            )
        return record.attempt

    def _tell_in_pod(self, owner: Owner, step: Step) -> None:
        if owner.uid in self._told:
            return
        self._told.add(owner.uid)
        message = (
            f"step {step.name} has executor: inline, and this operator runs without --inline: "
            "its inline steps run in pods"
        )
        logger.info("run %s/%s: %s", owner.namespace, owner.name, message)
        if self._events is not None:
            run = {"metadata": {"name": owner.name, "namespace": owner.namespace, "uid": owner.uid}}
            self._events.record(run, "Normal", "InlineStepsInPods", message)


def not_inline(step: Step) -> str | None:
    """Why ``step`` may not run inside the operator; None: it may."""
    if step.http is not None or step.llm is not None:
        return None
    return (
        f"executor: inline is only for http and llm steps; step {step.name!r} is a {_kind(step)} step "
        "and was not run (set executor: pod, or leave executor out)"
    )


def _kind(step: Step) -> str:
    try:
        return step.kind
    except ValueError:
        return "typeless"


def _redact(message: str, env: Mapping[str, str]) -> str:
    for value in env.values():
        if value:
            message = message.replace(value, "***")
    return message
