"""Carry out a Workflow's schedule against the API server.

One :meth:`Scheduler.tick` is one pass: list the runs the Workflow owns,
:func:`~kwf.schedule.cron.decide`, delete replaced runs, create the due run,
list again and prune the history from that listing, then write the
Workflow's status. It returns how long to wait for the next due time; the
caller (the operator) requeues by that much and also ticks when a run the
schedule owns finishes (``Forbid`` waits for that).

Every write is safe to repeat: the run's name is deterministic (AlreadyExists
means it was created by an earlier pass), deletes of absent runs are no-ops,
and the status write is a merge patch checked against the resourceVersion.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kwf.api import GROUP, VERSION, Condition, Schedule, Workflow
from kwf.k8s.api import KWF_JOBS, WORKFLOWS, AlreadyExists, Client, Conflict, NotFound
from kwf.k8s.manifests import label_value
from kwf.schedule.cron import Decision, Reason, ScheduledRun, decide, prune

JSON = Any

#: On the runs a schedule creates: which Workflow (label, for listing) and for when.
LABEL_WORKFLOW = f"{GROUP}/workflow"
ANNOTATION_SCHEDULED_AT = f"{GROUP}/scheduled-at"
CONDITION = "Scheduled"
#: kstatus' condition for "this cannot work as written": set, with the reason
#: below, while the schedule can never fire, so Flux and Argo CD show it.
STALLED = "Stalled"
STATUS_ATTEMPTS = 5


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclasses.dataclass(frozen=True)
class Tick:
    """What one pass did, and when the next is due."""

    decision: Decision | None  # None: the Workflow has no schedule
    created: str | None = None
    deleted: tuple[str, ...] = ()
    active: tuple[str, ...] = ()
    #: seconds until the next scheduled time; None when nothing is scheduled
    delay: float | None = None


class Scheduler:
    """Runs Workflows' schedules. ``clock`` gives ``now`` unless a tick is told it."""

    def __init__(self, api: Client, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.api = api
        self.clock = clock

    async def tick(self, workflow: Mapping[str, JSON], now: datetime | None = None) -> Tick:
        """One pass for a Workflow object (as read from the API or given by kopf).

        Raises pydantic's ValidationError for a Workflow that does not parse.
        """
        now = now or self.clock()
        workflow = plain(workflow)
        parsed = Workflow.model_validate(workflow)
        schedule = parsed.spec.schedule
        meta = parsed.metadata
        namespace, name, uid = meta.namespace or "default", meta.name, meta.uid or ""
        if schedule is None:
            return Tick(decision=None)
        runs = await self.runs(namespace, name, uid)
        decision = decide(
            name,
            schedule,
            last_schedule_time=parsed.status.last_schedule_time,
            created_at=meta.creation_timestamp,
            runs=runs,
            now=now,
        )
        deleted: list[str] = []
        for run in decision.replace:
            if await self._delete(namespace, run):
                deleted.append(run)
        created = None
        if decision.create is not None and decision.scheduled_at is not None:
            body = run_object(parsed, schedule, decision.create, decision.scheduled_at)
            try:
                await self.api.create(KWF_JOBS, body, namespace)
                created = decision.create
            except AlreadyExists:
                pass  # an earlier pass created it: same name, same run
        # History is judged on what exists after this pass's writes, and only on
        # runs finished before now: a run finishing meanwhile waits a pass.
        runs = await self.runs(namespace, name, uid)
        for run in prune(schedule, runs, now):
            if await self._delete(namespace, run):
                deleted.append(run)
        active = tuple(sorted(run.name for run in runs if run.active and run.name not in deleted))
        await self._write_status(workflow, decision, active, now)
        delay = None if decision.next_at is None else max((decision.next_at - now).total_seconds(), 0.0)
        return Tick(decision, created, tuple(deleted), active, delay)

    async def runs(self, namespace: str, workflow: str, uid: str) -> list[ScheduledRun]:
        """The runs this Workflow's schedule owns: labelled, and owned by its uid
        (a namesake's runs, or a run forging the label, are not ours)."""
        listing = await self.api.list(
            KWF_JOBS, namespace, label_selector=f"{LABEL_WORKFLOW}={label_value(workflow)}"
        )
        return [
            ScheduledRun.from_object(item)
            for item in listing.get("items") or []
            if any(ref.get("uid") == uid for ref in item["metadata"].get("ownerReferences") or [])
        ]

    async def _delete(self, namespace: str, run: str) -> bool:
        try:
            await self.api.delete(KWF_JOBS, run, namespace, propagation_policy="Background")
        except NotFound:
            return False
        return True

    async def _write_status(
        self, workflow: Mapping[str, JSON], decision: Decision, active: tuple[str, ...], now: datetime
    ) -> None:
        current: Mapping[str, JSON] = workflow
        meta = workflow["metadata"]
        for _ in range(STATUS_ATTEMPTS):
            patch = status_patch(current, decision, active, now)
            status = current.get("status") or {}
            if all(status.get(key) == value for key, value in patch.items()):
                return  # nothing new: no write, no event for watchers
            try:
                await self.api.patch(
                    WORKFLOWS,
                    meta["name"],
                    {"status": patch},
                    meta.get("namespace"),
                    subresource="status",
                    resource_version=current["metadata"].get("resourceVersion"),
                )
                return
            except NotFound:
                return  # the Workflow was deleted meanwhile; its runs go with it
            except Conflict:
                try:
                    current = await self.api.get(WORKFLOWS, meta["name"], meta.get("namespace"))
                except NotFound:
                    return
        raise Conflict(
            409, "Conflict", f"workflow {meta['name']}: status kept changing, gave up after {STATUS_ATTEMPTS}"
        )


def plain(value: JSON) -> JSON:
    """Plain dicts and lists from any mappings and sequences (kopf's bodies are views)."""
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def run_object(workflow: Workflow, schedule: Schedule, name: str, scheduled_at: datetime) -> dict[str, JSON]:
    """The Job a schedule starts: a workflowRef with the schedule's params, owned
    by the Workflow (deleting the Workflow deletes its scheduled runs)."""
    meta = workflow.metadata
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": meta.namespace,
            "labels": {LABEL_WORKFLOW: label_value(meta.name)},
            "annotations": {ANNOTATION_SCHEDULED_AT: _iso(scheduled_at)},
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "Workflow",
                    "name": meta.name,
                    "uid": meta.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {"workflowRef": {"name": meta.name}, "params": dict(schedule.params)},
    }


def status_patch(
    workflow: Mapping[str, JSON], decision: Decision, active: tuple[str, ...], now: datetime
) -> dict[str, JSON]:
    """The status fields the schedule owns. ``conditions`` is a list, which a
    merge patch replaces whole, so the other conditions are carried over."""
    status = workflow.get("status") or {}
    patch: dict[str, JSON] = {"active": list(active)}
    last = status.get("lastScheduleTime")
    if decision.scheduled_at is not None and (
        last is None or decision.scheduled_at > datetime.fromisoformat(last.replace("Z", "+00:00"))
    ):
        patch["lastScheduleTime"] = _iso(decision.scheduled_at)
    old = list(status.get("conditions") or [])
    reason, message = decision.reason, decision.message
    stalled = reason is Reason.INVALID

    def replaced(c: Mapping[str, JSON]) -> bool:
        # Conditions are a map by type: a stalled schedule takes Stalled over;
        # a working one removes only its own, leaving another writer's.
        if c.get("type") == STALLED:
            return stalled or c.get("reason") == Reason.INVALID.value
        return c.get("type") == CONDITION

    conditions = [c for c in old if not replaced(c)]
    generation = workflow["metadata"].get("generation")
    conditions.append(_condition(old, CONDITION, reason.healthy, reason, message, generation, now))
    if stalled:
        conditions.append(_condition(old, STALLED, True, reason, message, generation, now))
    patch["conditions"] = conditions
    return patch


def _condition(
    old: list[Mapping[str, JSON]],
    kind: str,
    true: bool,
    reason: Reason,
    message: str,
    generation: int | None,
    now: datetime,
) -> dict[str, JSON]:
    """A condition, keeping its transition time while its status stays the same."""
    state = "True" if true else "False"
    previous = next((c for c in old if c.get("type") == kind), None)
    since = now
    if previous is not None and previous.get("status") == state and previous.get("lastTransitionTime"):
        since = datetime.fromisoformat(previous["lastTransitionTime"].replace("Z", "+00:00"))
    condition = Condition(
        type=kind,
        status=state,
        reason=reason.value,
        message=message[:1024],
        last_transition_time=since,
        observed_generation=generation,
    )
    return {**condition.dump(), "lastTransitionTime": _iso(since)}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
