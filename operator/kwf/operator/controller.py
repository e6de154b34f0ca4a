"""One reconcile per run: observe -> plan() -> apply the actions -> one status patch.

Everything a reconcile reads is in memory: the run's last body (from kopf's
watch, or from our own last patch), its children (the :class:`ChildIndex`,
fed by the child watches) and the Workflows (their own watch). The only API
calls are the writes: child Jobs created or deleted, one status patch with
the resourceVersion it was planned from. A Conflict means someone wrote in
between (a user's sharedState patch, a spec edit): read again, plan again.
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

from kwf.api import Job, JobSpec, JobStatus, Step, Workflow, WorkflowSnapshot, WorkflowSpec
from kwf.engine.health import Reason, health_conditions
from kwf.engine.plan import plan
from kwf.engine.types import Attempt, AttemptPhase, Launch, Limits, Observed, Stop
from kwf.engine.workflow import effective_spec
from kwf.k8s.api import BATCH_JOBS, KWF_JOBS, AlreadyExists, ApiError, Client, Conflict, NotFound
from kwf.k8s.index import ChildIndex, RunKey
from kwf.k8s.manifests import Owner, PodOptions, child_job, child_name
from kwf.k8s.observe import is_child_of
from kwf.local.source import format_path
from kwf.operator import metrics
from kwf.operator.events import EventRecorder, changes
from kwf.operator.inline import DEFAULT_CONCURRENCY, InlineRunner, SecretCache, secret_fetcher
from kwf.operator.queue import WorkQueue

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


def describe(error: pydantic.ValidationError, prefix: str = "") -> str:
    """``spec.steps[0].name: String should match pattern ...; ...`` (wire names)."""
    parts = []
    for item in error.errors()[:5]:
        path = format_path([prefix, *item["loc"]] if prefix else list(item["loc"]))
        parts.append(f"{path}: {item['msg']}")
    more = len(error.errors()) - 5
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def merge_diff(old: JSON, new: JSON) -> JSON:
    """The RFC 7386 merge patch that turns ``old`` into ``new`` (None: no change)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return None if old == new else new
    patch: dict[str, JSON] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            sub = (
                merge_diff(old[key], value)
                if isinstance(value, dict) and isinstance(old[key], dict)
                else value
            )
            if sub is not None or value is None:
                patch[key] = sub
    return patch or None


_STATUS_FIELDS = frozenset(field.alias or name for name, field in JobStatus.model_fields.items())


def snapshot_of(workflow: Workflow) -> WorkflowSnapshot:
    """What a run keeps of its Workflow when it starts: all that its plan reads."""
    spec = workflow.spec
    return WorkflowSnapshot(
        name=workflow.metadata.name,
        generation=workflow.metadata.generation,
        steps=[step.dump() for step in spec.steps],
        params=dict(spec.params),
        initial_state=dict(spec.initial_state),
        parallelism=spec.parallelism,
        active_deadline_seconds=spec.active_deadline_seconds,
        ttl_seconds_after_finished=spec.ttl_seconds_after_finished,
    )


def snapshot_steps(snapshot: WorkflowSnapshot) -> list[Step]:
    return list(JobSpec.model_validate({"steps": list(snapshot.steps)}).steps or ())


def frozen_spec(snapshot: WorkflowSnapshot, current: Workflow | None) -> WorkflowSpec:
    """The Workflow's settings as the run first saw them. A snapshot written
    before it held params and the rest (no ``params`` key at all) takes them
    from the Workflow as it is now, as runs did then."""
    if "params" not in snapshot.model_fields_set and current is not None:
        return current.spec
    return WorkflowSpec.model_validate(
        {
            "steps": list(snapshot.steps),
            "params": dict(snapshot.params),
            "initialState": dict(snapshot.initial_state),
            "parallelism": snapshot.parallelism,
            "activeDeadlineSeconds": snapshot.active_deadline_seconds,
            "ttlSecondsAfterFinished": snapshot.ttl_seconds_after_finished,
        }
    )


def with_children(status: JobStatus, launched: Mapping[str, str]) -> JobStatus:
    """``status`` with each launched step's child Job name, so that the launch's
    own status patch records it (the watch event would otherwise cost a second)."""
    if not launched:
        return status
    steps = [
        entry.model_copy(update={"job": launched[entry.name]}) if entry.name in launched else entry
        for entry in status.steps
    ]
    return status.model_copy(update={"steps": steps})


class Controller:
    def __init__(self, api: Client, settings: Settings | None = None, *, clock: Clock = utcnow) -> None:
        self.api = api
        self.settings = settings or Settings()
        self.clock = clock
        self.index = ChildIndex()
        self.queue: WorkQueue[RunKey] = WorkQueue(self.reconcile)
        self.events = EventRecorder(api)
        self.inline = InlineRunner(
            self.child_changed,
            enabled=self.settings.inline,
            secrets=SecretCache(secret_fetcher(api)),
            events=self.events,
            concurrency=self.settings.inline_concurrency,
            limits=self.settings.limits,
            clock=clock,
        )
        self.synced = asyncio.Event()  # set once the child watches listed everything
        self._bodies: dict[RunKey, dict[str, JSON]] = {}
        self._workflows: dict[tuple[str, str], dict[str, JSON]] = {}
        self._rejected: dict[str, dict[tuple[str, int], Attempt]] = {}  # run uid -> refused launches
        self._woken_at: dict[RunKey, float] = {}  # when the event that may free a step arrived
        self._deferred: set[RunKey] = set()  # runs whose last pass left its status write to the next

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

    def workflow_changed(self, body: Mapping[str, JSON], *, deleted: bool = False) -> None:
        meta = body.get("metadata", {})
        ident = (meta.get("namespace", ""), meta.get("name", ""))
        if deleted:
            self._workflows.pop(ident, None)
            return
        self._workflows[ident] = dict(body)
        for key, run in list(self._bodies.items()):
            ref = (run.get("spec") or {}).get("workflowRef") or {}
            if key.namespace == ident[0] and ref.get("name") == ident[1]:
                self.queue.add(key)

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
                    self._bodies[key] = fresh
            logger.warning("run %s: status kept changing under us; trying again shortly", key)
            self.queue.add_after(key, 1.0)
        finally:
            metrics.RECONCILE_DURATION.observe(time.perf_counter() - started)

    async def _reconcile(self, key: RunKey, body: dict[str, JSON]) -> None:
        meta = body.get("metadata", {})
        uid, generation = str(meta.get("uid")), meta.get("generation")
        now = self.clock()
        try:
            status = JobStatus.model_validate(body.get("status") or {})
        except pydantic.ValidationError:
            status = JobStatus()  # unreadable status (not written by kwf): start from scratch
        try:
            job = Job.model_validate(body)
        except pydantic.ValidationError as error:
            await self._stall(key, body, status, Reason.INVALID_SPEC, describe(error), now)
            return

        spec, snapshot = self._effective(job, status)
        if spec is None:
            ref = job.spec.workflow_ref
            name = ref.name if ref else "?"
            if isinstance(snapshot, str):
                await self._stall(key, body, status, Reason.INVALID_WORKFLOW, snapshot, now)
            else:
                message = f"spec.workflowRef.name: Workflow {name!r} not found in namespace {key.namespace}"
                await self._stall(key, body, status, Reason.WORKFLOW_NOT_FOUND, message, now)
            self.queue.add_after(key, MISSING_WORKFLOW_RETRY)
            return

        if (
            status.phase.finished
            and status.observed_generation == generation
            and not self.index.children(uid)
        ):
            await self._after_finish(key, body, status, job, now)
            return

        await self._read_logs(uid)
        observed = self.inline.observe(uid, spec, status, self._observed(uid))
        try:
            decision = plan(
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
            await self._stall(key, body, status, Reason.INVALID_SPEC, str(error), now)
            return
        new_status = decision.status
        if snapshot is not None and isinstance(snapshot, WorkflowSnapshot):
            new_status = new_status.model_copy(update={"workflow": snapshot})

        owner = Owner(name=key.name, namespace=key.namespace, uid=uid)
        launched = await self._apply(owner, decision.actions)
        if await self._inline_done(key, uid, decision.actions):
            # The next pass writes their launch and their end in one status patch.
            self.queue.add(key)
            return
        await self._write_status(key, body, status, with_children(new_status, launched))
        if new_status.phase.finished:
            self.inline.forget_run(uid)

        if decision.requeue_after is not None:
            self.queue.add_after(key, decision.requeue_after)
        if new_status.phase.finished:
            await self._after_finish(key, self._bodies.get(key, body), new_status, job, self.clock())
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

    def _effective(self, job: Job, status: JobStatus) -> tuple[JobSpec | None, WorkflowSnapshot | str | None]:
        """The spec to plan from: inline steps, or the Workflow's as the run first saw them."""
        spec = job.spec
        ref = spec.workflow_ref
        if ref is None:
            return spec, None
        current = self._workflows.get((job.metadata.namespace or "", ref.name))
        workflow: Workflow | None = None
        if current is not None:
            try:
                workflow = Workflow.model_validate(current)
            except pydantic.ValidationError as error:
                if status.workflow is None:
                    return None, f"Workflow {ref.name!r} is not valid: {describe(error)}"
        snapshot = status.workflow
        if snapshot is None or snapshot.name != ref.name:
            if workflow is None:
                return None, None
            snapshot = snapshot_of(workflow)
        try:
            effective = effective_spec(spec, frozen_spec(snapshot, workflow), snapshot_steps(snapshot))
        except pydantic.ValidationError as error:
            return None, f"Workflow {ref.name!r} is not valid: {describe(error)}"
        return effective, snapshot

    def _observed(self, uid: str) -> Observed:
        observed = {step: list(attempts) for step, attempts in self.index.observe(uid).items()}
        for (step, number), attempt in self._rejected.get(uid, {}).items():
            if not any(a.number == number for a in observed.get(step, ())):
                observed.setdefault(step, []).append(attempt)
        return observed

    async def _read_logs(self, uid: str) -> None:
        async def read(job_uid: str, namespace: str, pod: str) -> None:
            try:
                self.index.put_log(job_uid, await self.api.logs(namespace, pod))
            except NotFound:
                self.index.put_log(job_uid, "")

        wanted = self.index.logs_wanted(uid)
        if wanted:
            await asyncio.gather(*(read(*item) for item in wanted))

    # ------------------------------------------------------------- apply

    async def _apply(self, owner: Owner, actions: tuple[Launch | Stop, ...]) -> dict[str, str]:
        """Take the actions; returns each launched step's child Job name."""
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
            *(self._launch(owner, a) if isinstance(a, Launch) else self._stop(owner, a) for a in actions)
        )
        if woken is not None:
            metrics.SCHEDULE_LATENCY.observe(time.perf_counter() - woken)
        return {
            action.step.name: name
            for action, name in zip(actions, done, strict=True)
            if isinstance(action, Launch) and name is not None
        }

    async def _launch(self, owner: Owner, launch: Launch) -> str | None:
        """Start one attempt; returns its child Job's name (None: inline, or refused)."""
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
            if not is_child_of(created, owner.uid):
                self._refuse(
                    owner, launch, AttemptPhase.LOST, f"a Job named {name} exists and is not this run's"
                )
                return None
        except ApiError as error:
            if error.status >= 500 or error.status == 429:
                raise
            self._refuse(owner, launch, AttemptPhase.LOST, f"the step's Job was rejected: {error.message}")
            return None
        # Into the index at once: the next plan must see this attempt even if
        # the watch event is still on its way.
        self.index.put_job(created)
        return name

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

    async def _stop(self, owner: Owner, stop: Stop) -> None:
        if await self.inline.stop(owner, stop):
            return
        name = child_name(owner.name, stop.step, stop.number)
        for child in self.index.children(owner.uid):
            meta = child["metadata"]
            if meta["name"] == name and not meta.get("deletionTimestamp"):
                with contextlib.suppress(NotFound, Conflict):
                    await self.api.delete(
                        BATCH_JOBS, name, owner.namespace, propagation_policy="Background", uid=meta["uid"]
                    )

    # ------------------------------------------------------------ status

    async def _write_status(self, key: RunKey, body: dict[str, JSON], old: JobStatus, new: JobStatus) -> None:
        before = body.get("status") or {}
        after = new.dump()
        diff = merge_diff(before, after)
        if isinstance(diff, dict):
            # Fields this version of kwf does not know are left as they are.
            diff = {k: v for k, v in diff.items() if v is not None or k in _STATUS_FIELDS}
        if not diff:
            return
        patched = await self.api.patch(
            KWF_JOBS,
            key.name,
            {"status": diff},
            key.namespace,
            subresource="status",
            resource_version=body["metadata"]["resourceVersion"],
        )
        known = self._bodies.get(key)
        same_run = known is not None and known["metadata"].get("uid") == patched["metadata"].get("uid")
        if same_run and _rv(patched) >= _rv(known):
            self._bodies[key] = patched
        for kind, reason, message in changes(old, new):
            self.events.record(patched, kind, reason, message)
        self._count(old, new)

    async def _stall(
        self,
        key: RunKey,
        body: dict[str, JSON],
        status: JobStatus,
        reason: Reason,
        message: str,
        now: datetime,
    ) -> None:
        generation = body.get("metadata", {}).get("generation")
        conditions = health_conditions(status.conditions, reason, message, now, generation)
        stalled = status.model_copy(
            update={"conditions": conditions, "message": message[:1024], "observed_generation": generation}
        )
        await self._write_status(key, body, status, stalled)  # its Event comes from changes()

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

    def _count(self, old: JobStatus, new: JobStatus) -> None:
        if new.phase != old.phase and new.phase.finished:
            metrics.RUNS_FINISHED.labels(new.phase.value).inc()
        before = {step.name: step for step in old.steps}
        for step in new.steps:
            prior = before.get(step.name)
            if step.phase.finished and (prior is None or not prior.phase.finished):
                metrics.STEPS_FINISHED.labels(step.phase.value).inc()
                if step.started_at and step.finished_at:
                    seconds = (step.finished_at - step.started_at).total_seconds()
                    metrics.STEP_DURATION.labels(step.phase.value).observe(max(seconds, 0.0))
        for model, usage in new.usage.items():
            prior_usage = old.usage.get(model)
            for kind in ("prompt_tokens", "completion_tokens"):
                grown = getattr(usage, kind) - (getattr(prior_usage, kind) if prior_usage else 0)
                if grown > 0:
                    metrics.LLM_TOKENS.labels(model, kind.split("_")[0]).inc(grown)

    def run_keys(self) -> list[RunKey]:
        return list(self._bodies)
