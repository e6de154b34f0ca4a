"""One reconcile per run: observe -> plan() -> apply the actions -> one status patch.

Everything a reconcile reads is in memory: the run's last body (from kopf's
watch, or from our own last patch), its children (the :class:`ChildIndex`,
fed by the child watches) and the Workflows (their own watch). The only API
calls are the writes: child Jobs created or deleted, one status patch with
the resourceVersion it was planned from. A Conflict means someone wrote in
between (a user's sharedState patch, a spec edit): read again, plan again.

A run that cannot be read or planned is stalled with a message once and left
alone; a child kwf did not launch is ignored and reported once; a status the
API server refuses fails the run with a short message. None of them holds
up any other run, and large runs are read and planned off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic

from kwf.api import Job, JobStatus
from kwf.engine.health import Reason
from kwf.engine.plan import plan
from kwf.engine.types import Attempt, AttemptPhase, Launch, Limits, Observed, Stop
from kwf.k8s.api import (
    BATCH_JOBS,
    KWF_JOBS,
    AlreadyExists,
    ApiError,
    Client,
    Conflict,
    NotFound,
    UnreadableAnswer,
)
from kwf.k8s.index import ChildIndex, RunKey
from kwf.k8s.manifests import CONTAINER, Owner, PodOptions, child_job, child_name, is_launch
from kwf.k8s.observe import controller_uid
from kwf.operator import metrics
from kwf.operator.children import Children
from kwf.operator.events import EventRecorder
from kwf.operator.inline import DEFAULT_CONCURRENCY, InlineRunner
from kwf.operator.metrics import SetAsideKind
from kwf.operator.network import NetworkPolicy
from kwf.operator.planning import read_run, run_sized, size_of
from kwf.operator.queue import WorkQueue
from kwf.operator.setaside import SetAside, said_stalled, workflow_ref
from kwf.operator.status import describe, with_children
from kwf.operator.step_secrets import DEFAULT_INLINE_SERVICE_ACCOUNT, SecretCache, secret_fetcher
from kwf.operator.workflows import Blocked, WorkflowKey, effective
from kwf.operator.writes import StatusWriter
from kwf.steps.framing import log_budget

JSON = Any
Clock = Callable[[], datetime]
logger = logging.getLogger(__name__)

RESYNC_SECONDS = 60.0
MISSING_WORKFLOW_RETRY = 10.0
MAX_CONFLICTS = 10
#: How long a pass that started inline steps waits for them before it writes
#: status: a quick http or llm step then costs one status write, not two.
INLINE_SETTLE_SECONDS = 0.05


def utcnow() -> datetime:
    return datetime.now(UTC)


def _rv(body: Mapping[str, JSON] | None) -> int:
    try:
        return int((body or {}).get("metadata", {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


@dataclasses.dataclass(frozen=True)
class Settings:
    pod: PodOptions = dataclasses.field(default_factory=PodOptions)
    limits: Limits = dataclasses.field(default_factory=Limits)
    resync_seconds: float = RESYNC_SECONDS
    inline: bool = False  # run executor: inline steps in this process
    inline_concurrency: int = DEFAULT_CONCURRENCY
    inline_network: NetworkPolicy = dataclasses.field(default_factory=NetworkPolicy)
    inline_service_account: str = DEFAULT_INLINE_SERVICE_ACCOUNT


class Controller:
    def __init__(self, api: Client, settings: Settings | None = None, *, clock: Clock = utcnow) -> None:
        self.api = api
        self.settings = settings or Settings()
        self.clock = clock
        self.index = ChildIndex(result_cap=self.settings.limits.result_bytes)
        self.children = Children()
        self.queue: WorkQueue[RunKey] = WorkQueue(self.reconcile)
        self.events = EventRecorder(api)
        self.set_aside = SetAside(api, self.events)
        self.writer = StatusWriter(api, self.events, self.set_aside, self._remember, clock)
        self.inline = InlineRunner(
            self.child_changed,
            enabled=self.settings.inline,
            secrets=SecretCache(secret_fetcher(api, self.settings.inline_service_account)),
            events=self.events,
            concurrency=self.settings.inline_concurrency,
            limits=self.settings.limits,
            network=self.settings.inline_network,
            clock=clock,
        )
        self.synced = asyncio.Event()  # set once the child watches listed everything
        self._bodies: dict[RunKey, dict[str, JSON]] = {}
        self._workflows: dict[WorkflowKey, dict[str, JSON]] = {}
        self._unreadable: dict[WorkflowKey, str] = {}  # Workflows that cannot be read, and why
        self._specs: dict[str, tuple[int, Job]] = {}  # run uid -> (generation, its spec read)
        self._rejected: dict[str, dict[tuple[str, int], Attempt]] = {}  # run uid -> refused launches
        self._woken_at: dict[RunKey, float] = {}  # when the event that may free a step arrived
        self._deferred: set[RunKey] = set()  # runs whose last pass left its status write to the next
        self._writes: set[asyncio.Task[None]] = set()  # Workflow conditions on their way

    # ------------------------------------------------------------ inputs

    def run_changed(self, body: Mapping[str, JSON], *, deleted: bool = False) -> None:
        meta = body.get("metadata", {})
        key, uid = RunKey(meta.get("namespace", ""), meta.get("name", "")), str(meta.get("uid") or "")
        if deleted:
            if self._bodies.get(key, {}).get("metadata", {}).get("uid") == uid:
                self._bodies.pop(key, None)
                self._deferred.discard(key)
                self.queue.forget(key)
            self.index.forget_run(uid)
            self.children.forget_run(uid)
            self.events.forget(uid)
            self.set_aside.forget(body)
            self._specs.pop(uid, None)
            self._rejected.pop(uid, None)
            self.inline.forget_run(uid)
            return
        known = self._bodies.get(key)
        if known is not None and known.get("metadata", {}).get("uid") == uid and _rv(known) >= _rv(body):
            return  # our own status patch coming back: already planned from it
        self._bodies[key] = dict(body)
        self.index.remember_run(uid, key)
        self.queue.add(key)

    def child_changed(self, key: RunKey | None) -> None:
        if key is None:
            return
        self._woken_at.setdefault(key, time.perf_counter())
        self.queue.add(key)

    def child_unreadable(self, obj: Mapping[str, JSON], kind: SetAsideKind, problem: str) -> None:
        """A child Job or pod the watch could not read: left out, reported on the run it claims."""
        run = self._bodies.get(self.index.run_key(controller_uid(obj)) or RunKey("", ""))
        name = (obj.get("metadata") or {}).get("name")
        message = f"{kind.replace('_', ' ')} {name} cannot be read and is ignored: {problem}"
        self.set_aside.report(obj, kind, "ChildUnreadable", message, about=run)

    def workflow_changed(
        self, body: Mapping[str, JSON], *, deleted: bool = False, problem: str | None = None
    ) -> None:
        meta = body.get("metadata", {})
        ident = (meta.get("namespace", ""), meta.get("name", ""))
        if deleted:
            self._workflows.pop(ident, None)
            self._unreadable.pop(ident, None)
            self.set_aside.forget(body)
            return
        if problem is not None:
            self._workflows.pop(ident, None)
            self._unreadable[ident] = problem
            message = f"Workflow {ident[1]} cannot be read: {problem}"
            if not said_stalled(body, message) and self.set_aside.report(
                body, "workflow", "InvalidWorkflow", message
            ):
                self._background(self.set_aside.stall_workflow(body, message, self.clock()))
        else:
            self._unreadable.pop(ident, None)
            self._workflows[ident] = dict(body)
            if self.set_aside.reported(body):
                self.set_aside.forget(body)
                self._background(self.set_aside.clear_workflow(body))
        for key, run in list(self._bodies.items()):
            ref = (run.get("spec") or {}).get("workflowRef") or {}
            if key.namespace == ident[0] and ref.get("name") == ident[1]:
                self.queue.add(key)

    def _background(self, write: Any) -> None:
        task = asyncio.get_running_loop().create_task(write)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def close(self) -> None:
        await asyncio.gather(*self._writes, return_exceptions=True)

    # --------------------------------------------------------- reconcile

    async def reconcile(self, key: RunKey) -> None:
        await self.synced.wait()
        started = time.perf_counter()
        try:
            for _ in range(MAX_CONFLICTS):
                body = self._bodies.get(key)
                if body is None:
                    return
                try:
                    await self._reconcile(key, body)
                    return
                except Conflict:
                    metrics.STATUS_CONFLICTS.inc()
                    try:
                        fresh = await self.api.get(KWF_JOBS, key.name, key.namespace)
                    except NotFound:
                        self.run_changed(body, deleted=True)
                        return
                    except UnreadableAnswer:
                        return  # kopf's watch brings the new version (and reads it whole)
                    self._bodies[key] = fresh
            logger.warning("run %s: status kept changing under us; trying again shortly", key)
            self.queue.add_after(key, 1.0)
        finally:
            metrics.RECONCILE_DURATION.observe(time.perf_counter() - started)

    def _read(self, body: Mapping[str, JSON]) -> tuple[JobStatus, Job]:
        """The run's status and spec. The spec is read once per generation."""
        try:
            status = JobStatus.model_validate(body.get("status") or {})
        except pydantic.ValidationError:
            status = JobStatus()  # unreadable status (not written by kwf): start from scratch
        meta = body.get("metadata") or {}
        uid, generation = str(meta.get("uid") or ""), meta.get("generation")
        cached = self._specs.get(uid)
        if cached is not None and generation is not None and cached[0] == generation:
            return status, cached[1]
        job = read_run(body)
        if generation is not None:
            self._specs[uid] = (generation, job)
        return status, job

    async def _reconcile(self, key: RunKey, body: dict[str, JSON]) -> None:
        meta = body.get("metadata", {})
        uid, generation = str(meta.get("uid")), meta.get("generation")
        now = self.clock()
        ref = ((body.get("spec") or {}).get("workflowRef") or {}).get("name")
        size = size_of(body, self._workflows.get((key.namespace, str(ref))) if ref else None)
        status = JobStatus()
        try:
            status, job = await run_sized(size, self._read, body)
            found = await run_sized(size, effective, job, status, self._workflows, self._unreadable)
        except pydantic.ValidationError as error:
            await self.writer.stall(key, body, status, Reason.INVALID_SPEC, describe(error), now)
            return
        except Exception as error:  # a run nested too deep, say: it alone is set aside
            await self.writer.cannot_plan(key, body, status, error, now)
            return
        if isinstance(found, Blocked):
            await self.writer.stall(key, body, status, found.reason, found.message, now)
            if found.workflow is not None and (key.namespace, found.workflow) not in self._unreadable:
                about = workflow_ref(key.namespace, found.workflow)
                self.set_aside.report(about, "workflow", found.reason.value, found.message)
            self.queue.add_after(key, MISSING_WORKFLOW_RETRY)
            return
        spec, snapshot = found

        if (
            status.phase.finished
            and status.observed_generation == generation
            and not self.index.children(uid)
        ):
            await self._after_finish(key, body, status, job, now)
            return

        jobs = self.index.child_jobs(uid)
        verdict = self.children.judge(key, uid, status, jobs)
        for child_uid, why in verdict.foreign.items():
            child = jobs[child_uid]
            name = child["metadata"].get("name")
            message = f"batch Job {name} is not one of this run's attempts and is ignored: {why}"
            self.set_aside.report(child, "child_job", "ChildIgnored", message, about=body)
        await self._read_logs(uid, verdict.accepted)
        observed = self.inline.observe(uid, spec, status, self._observed(uid, verdict.accepted))
        try:
            decision = await run_sized(
                size,
                plan,
                spec,
                status,
                observed,
                now,
                self.settings.limits,
                generation,
                job=key.name,
                namespace=key.namespace,
            )
        except ValueError as error:
            await self.writer.stall(key, body, status, Reason.INVALID_SPEC, str(error), now)
            return
        except Exception as error:
            await self.writer.cannot_plan(key, body, status, error, now)
            return
        new_status = decision.status
        if snapshot is not None:
            new_status = new_status.model_copy(update={"workflow": snapshot})

        owner = Owner(name=key.name, namespace=key.namespace, uid=uid)
        launched = await self._apply(owner, decision.actions, verdict.names)
        if await self._inline_done(key, uid, decision.actions):
            # The next pass writes their launch and their end in one status patch.
            self.queue.add(key)
            return
        names = {step: name for step, (name, _) in launched.items()}
        uids = {**verdict.names, **dict(launched.values())}
        recorded = with_children(new_status, names, uids)
        written = await self.writer.write(key, body, status, recorded, size)
        if written.phase.finished:
            self.inline.forget_run(uid)

        if decision.requeue_after is not None and not written.phase.finished:
            self.queue.add_after(key, decision.requeue_after)
        if written.phase.finished:
            await self._after_finish(key, self._bodies.get(key, body), written, job, self.clock())
        else:
            self.queue.add_after(key, self.settings.resync_seconds)

    async def _inline_done(self, key: RunKey, uid: str, actions: tuple[Launch | Stop, ...]) -> bool:
        """Whether the inline attempts this pass started ended within INLINE_SETTLE_SECONDS,
        so that this pass may leave its status write to the next one. Never twice in a
        row: a chain of quick inline steps still records every other step as it goes."""
        if key in self._deferred:
            self._deferred.discard(key)
            return False
        launches = [(a.step.name, a.number) for a in actions if isinstance(a, Launch)]
        if not await self.inline.settle(uid, launches, INLINE_SETTLE_SECONDS):
            return False
        self._deferred.add(key)
        return True

    def _observed(self, uid: str, accepted: frozenset[str]) -> Observed:
        observed = {step: list(attempts) for step, attempts in self.index.observe(uid, accepted).items()}
        for (step, number), attempt in self._rejected.get(uid, {}).items():
            if not any(a.number == number for a in observed.get(step, ())):
                observed.setdefault(step, []).append(attempt)
        return observed

    async def _read_logs(self, uid: str, accepted: frozenset[str]) -> None:
        """The logs that hold framed results: no more of each than its frame."""

        async def read(job_uid: str, namespace: str, pod: str, size: int) -> None:
            lines, limit = log_budget(size)
            try:
                log = await self.api.logs(namespace, pod, CONTAINER, limit_bytes=limit, tail_lines=lines)
            except NotFound:
                log = ""
            self.index.put_log(job_uid, log)

        wanted = self.index.logs_wanted(uid, accepted)
        if wanted:
            await asyncio.gather(*(read(u, ns, pod, framed.bytes) for u, ns, pod, framed in wanted))

    # ------------------------------------------------------------- apply

    async def _apply(
        self, owner: Owner, actions: tuple[Launch | Stop, ...], children: Mapping[str, str]
    ) -> dict[str, tuple[str, str]]:
        """Take the actions; returns each launched step's child Job (name, uid)."""
        # Taken on every pass, launching or not: plan() has just seen every child
        # event so far, so only a later event can be the one that frees a step.
        woken = self._woken_at.pop(RunKey(owner.namespace, owner.name), None)
        if not actions:
            return {}
        if not any(isinstance(a, Launch) for a in actions):
            woken = None  # a stop frees nothing
        if woken is not None:
            metrics.SCHEDULE_DECISION.observe(time.perf_counter() - woken)
        done = await asyncio.gather(
            *(
                self._launch(owner, a) if isinstance(a, Launch) else self._stop(owner, a, children)
                for a in actions
            )
        )
        if woken is not None:
            metrics.SCHEDULE_LATENCY.observe(time.perf_counter() - woken)
        return {
            action.step.name: child
            for action, child in zip(actions, done, strict=True)
            if isinstance(action, Launch) and child is not None
        }

    async def _launch(self, owner: Owner, launch: Launch) -> tuple[str, str] | None:
        """Start one attempt; returns its child Job's (name, uid) (None: inline, or refused)."""
        if self.inline.launch(owner, launch):
            return None
        name = child_name(owner.name, launch.step.name, launch.number)
        try:
            manifest = child_job(launch, owner, self.settings.pod)
        except ValueError as error:  # inputs over their cap: this attempt can never start
            self._refuse(owner, launch, AttemptPhase.FAILED, str(error))
            return None
        try:
            created = await self.api.create(BATCH_JOBS, manifest, owner.namespace)
            metrics.STEPS_LAUNCHED.inc()
        except AlreadyExists:
            created = await self.api.get(BATCH_JOBS, name, owner.namespace)
            # Launched before a restart, or someone else's Job under the name kwf meant to use.
            if not is_launch(created, manifest):
                message = f"a Job named {name} exists and is not one kwf launched for this run"
                self._refuse(owner, launch, AttemptPhase.LOST, message)
                return None
        except ApiError as error:
            if error.status >= 500 or error.status == 429:
                raise
            self._refuse(owner, launch, AttemptPhase.LOST, f"the step's Job was rejected: {error.message}")
            return None
        uid = str(created["metadata"]["uid"])
        self.children.launched(owner.uid, uid)
        # Into the index at once: the next plan must see this attempt even if
        # the watch event is still on its way.
        self.index.put_job(created)
        return name, uid

    def _refuse(self, owner: Owner, launch: Launch, phase: AttemptPhase, message: str) -> None:
        now = self.clock()
        attempt = Attempt(
            step=launch.step.name,
            number=launch.number,
            phase=phase,
            started_at=now,
            finished_at=now,
            message=message[:1000],
        )
        self._rejected.setdefault(owner.uid, {})[(launch.step.name, launch.number)] = attempt
        self.queue.add(RunKey(owner.namespace, owner.name))

    async def _stop(self, owner: Owner, stop: Stop, children: Mapping[str, str]) -> None:
        if await self.inline.stop(owner, stop):
            return
        name = child_name(owner.name, stop.step, stop.number)
        uid = children.get(name)
        if uid is None:
            return  # not one kwf launched: never deleted on the run's behalf
        for child in self.index.children(owner.uid):
            meta = child["metadata"]
            if meta["uid"] == uid and not meta.get("deletionTimestamp"):
                with contextlib.suppress(NotFound, Conflict):
                    await self.api.delete(
                        BATCH_JOBS, name, owner.namespace, propagation_policy="Background", uid=uid
                    )

    async def _after_finish(
        self, key: RunKey, body: dict[str, JSON], status: JobStatus, job: Job, now: datetime
    ) -> None:
        """Delete a finished run once its ttlSecondsAfterFinished has passed."""
        ttl = job.spec.ttl_seconds_after_finished
        if ttl is None and job.spec.workflow_ref is not None:
            if status.workflow is not None and "params" in status.workflow.model_fields_set:
                ttl = status.workflow.ttl_seconds_after_finished
            else:
                wf = self._workflows.get((key.namespace, job.spec.workflow_ref.name), {})
                ttl = (wf.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        finished = status.finished_at or now
        due = finished + timedelta(seconds=ttl)
        if due > now:
            self.queue.add_after(key, (due - now).total_seconds())
            return
        with contextlib.suppress(NotFound, Conflict):
            await self.api.delete(
                KWF_JOBS,
                key.name,
                key.namespace,
                propagation_policy="Background",
                uid=body["metadata"]["uid"],
            )

    def _remember(self, key: RunKey, patched: dict[str, JSON]) -> None:
        known = self._bodies.get(key)
        same_run = known is not None and known["metadata"].get("uid") == patched["metadata"].get("uid")
        if same_run and _rv(patched) >= _rv(known):
            self._bodies[key] = patched

    def run_keys(self) -> list[RunKey]:
        return list(self._bodies)
