"""``kwf run``: one run on this machine, with the engine the operator uses.

The loop is the operator's, without a cluster: observe what the executor has,
ask :func:`kwf.engine.plan` what to do, do it, and sleep until an attempt
ends or the planner's ``requeue_after`` comes due. Nothing polls on a fixed
period, so a step starts as soon as the one it waits for has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kwf.api import Job, JobStatus, Workflow
from kwf.engine.plan import plan
from kwf.engine.types import Launch, Limits
from kwf.local.executor import Clock, LocalExecutor, utcnow
from kwf.local.source import load_run

JSON = Any
OnUpdate = Callable[[JobStatus], None]


async def run_local(
    source: Path | str | Job | Workflow,
    params: Mapping[str, JSON] | None = None,
    state_overrides: Mapping[str, JSON] | None = None,
    *,
    on_update: OnUpdate | None = None,
    cancel: asyncio.Event | None = None,
    limits: Limits | None = None,
    clock: Clock = utcnow,
    allow_container_local: bool = False,
    environ: Mapping[str, str] | None = None,
) -> JobStatus:
    """Run a Job or Workflow (a file, or a parsed object) to its end; its last status.

    ``params`` and ``state_overrides`` are laid over the file's params and
    initial state. Setting ``cancel`` stops running steps and ends the run as
    Cancelled, as ``spec.cancel`` does on a cluster. Raises
    :class:`kwf.local.source.SourceError` for a file that cannot run.
    """
    limits = limits or Limits()
    job = load_run(source, params, state_overrides).job
    executor = LocalExecutor(
        limits=limits, clock=clock, environ=environ, allow_container_local=allow_container_local
    )
    waker = asyncio.create_task(_wake_on(cancel, executor)) if cancel is not None else None
    status = JobStatus()
    try:
        while True:
            if cancel is not None and cancel.is_set() and not job.spec.cancel:
                job = job.model_copy(update={"spec": job.spec.model_copy(update={"cancel": True})})
            executor.changes_seen()
            decision = plan(
                job.spec,
                status,
                executor.observe(),
                clock(),
                limits,
                generation=1,
                job=job.metadata.name,
                namespace=job.metadata.namespace,
            )
            status = decision.status
            # The plan's status already counts what it launches, so there is
            # no second pass here: the next one comes when something changes.
            for action in decision.actions:
                if isinstance(action, Launch):
                    await executor.launch(action)
                else:
                    await executor.stop(action)
            if on_update is not None:
                on_update(status)
            if status.phase.finished and executor.running == 0:
                return status
            if executor.running == 0 and decision.requeue_after is None and not decision.actions:
                return status  # nothing runs and nothing is due: the run cannot go on (Stalled)
            await executor.wait(decision.requeue_after)
    finally:
        if waker is not None:
            waker.cancel()
        await executor.close()


async def _wake_on(event: asyncio.Event, executor: LocalExecutor) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await event.wait()
        executor.wake()
