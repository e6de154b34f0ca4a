"""Workflows' schedules in the operator: when to tick, never how.

A Workflow's schedule is ticked (:meth:`kwf.schedule.Scheduler.tick`) when
the Workflow changes, when its next scheduled time comes (a timer of the
queue, so no handler ever sleeps), and when a run it started finishes
(``concurrencyPolicy: Forbid`` waits for that, and the history limits count
it). Every tick is safe to repeat, so an extra one costs a list and nothing
more; a Workflow has at most one tick running at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pydantic

from kwf.api import JobPhase
from kwf.k8s.api import Client
from kwf.operator.queue import WorkQueue
from kwf.schedule import Scheduler
from kwf.schedule.scheduler import LABEL_WORKFLOW, plain

JSON = Any
WorkflowKey = tuple[str, str]  # namespace, name
logger = logging.getLogger(__name__)

#: Ticks come this long after a due time, so the clock has surely passed it.
MARGIN_SECONDS = 0.5


def utcnow() -> datetime:
    return datetime.now(UTC)


def _key(body: Mapping[str, JSON]) -> WorkflowKey:
    meta = body.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class Schedules:
    """The schedules of the Workflows the operator sees, each on its own timer."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.queue: WorkQueue[WorkflowKey] = WorkQueue(self._tick, concurrency=8)
        self._workflows: dict[WorkflowKey, dict[str, JSON]] = {}

    @classmethod
    def using(cls, api: Client, clock: Callable[[], datetime] = utcnow) -> Schedules:
        return cls(Scheduler(api, clock=clock))

    def workflow_changed(self, body: Mapping[str, JSON], *, deleted: bool = False) -> None:
        key = _key(body)
        if deleted:
            self._workflows.pop(key, None)
            self.queue.forget(key)
            return
        self._workflows[key] = plain(body)
        if (body.get("spec") or {}).get("schedule") is not None:
            self.queue.add(key)
        else:
            self.queue.forget(key)  # the schedule was removed: its timer goes too

    def run_changed(self, body: Mapping[str, JSON]) -> None:
        """A run changed: tick its Workflow when a run the schedule started has finished."""
        meta = body.get("metadata") or {}
        if LABEL_WORKFLOW not in (meta.get("labels") or {}):
            return
        try:
            finished = JobPhase((body.get("status") or {}).get("phase") or JobPhase.PENDING).finished
        except ValueError:
            return
        if not finished:
            return
        for ref in meta.get("ownerReferences") or ():
            if ref.get("kind") == "Workflow" and ref.get("controller"):
                key = (str(meta.get("namespace") or ""), str(ref.get("name")))
                if key in self._workflows:
                    self.queue.add(key)

    async def _tick(self, key: WorkflowKey) -> None:
        body = self._workflows.get(key)
        if body is None:
            return
        try:
            tick = await self.scheduler.tick(body)
        except pydantic.ValidationError as error:
            logger.warning("workflow %s/%s: schedule not run, the Workflow is not valid: %s", *key, error)
            return
        if tick.created:
            logger.info("workflow %s/%s: schedule started run %s", *key, tick.created)
        if tick.delay is not None:
            self.queue.add_after(key, tick.delay + MARGIN_SECONDS)

    async def close(self) -> None:
        await self.queue.close()
