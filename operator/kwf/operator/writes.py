"""A run's status writes: one merge patch per pass, its Events and metrics, and
the two writes that end a run the operator cannot go on with (stalled: its
spec cannot be planned; failed: the API server refuses its status).

A status the API server refuses (too large, or invalid in a way plan() did
not foresee) must still end the run with a message: retrying the same write
would wedge the run forever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from kwf.api import JobStatus
from kwf.engine.health import Reason, health_conditions
from kwf.k8s.api import KWF_JOBS, ApiError, Client, UnreadableAnswer
from kwf.k8s.index import RunKey
from kwf.operator import metrics
from kwf.operator.events import EventRecorder, changes
from kwf.operator.planning import run_sized
from kwf.operator.setaside import SetAside
from kwf.operator.status import refused, refused_status, status_patch

JSON = Any
logger = logging.getLogger(__name__)


class StatusWriter:
    """``remember`` is told of every answer to a write: the run as it is now."""

    def __init__(
        self,
        api: Client,
        events: EventRecorder,
        set_aside: SetAside,
        remember: Callable[[RunKey, dict[str, JSON]], None],
        clock: Callable[[], datetime],
    ) -> None:
        self.api, self.events, self.set_aside = api, events, set_aside
        self.remember, self.clock = remember, clock

    async def write(
        self, key: RunKey, body: dict[str, JSON], old: JobStatus, new: JobStatus, size: int = 0
    ) -> JobStatus:
        """Write ``new`` as a merge patch; returns the status now written."""
        diff = await run_sized(size, status_patch, body.get("status") or {}, new)
        if not diff:
            return new
        try:
            patched = await self._patch(key, body, diff)
        except ApiError as error:
            if not refused(error):
                raise
            return await self._fail_refused(key, body, old, error)
        self._written(key, patched, old, new)
        return new

    async def stall(
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
        await self.write(key, body, status, stalled)  # its Event comes from changes()

    async def cannot_plan(
        self, key: RunKey, body: dict[str, JSON], status: JobStatus, error: Exception, now: datetime
    ) -> None:
        """A run that breaks reading or planning: stalled, naming the problem, once."""
        detail = str(error)[:300] or type(error).__name__
        if isinstance(error, RecursionError):
            detail = "the run is nested too deeply to plan"
        logger.warning("run %s set aside: %s: %s", key, type(error).__name__, detail)
        metrics.set_aside("run")
        message = f"the operator cannot plan this run: {detail}"
        await self.stall(key, body, status, Reason.INVALID_SPEC, message, now)

    async def _patch(self, key: RunKey, body: dict[str, JSON], status: JSON) -> dict[str, JSON]:
        try:
            return await self.api.patch(
                KWF_JOBS,
                key.name,
                {"status": status},
                key.namespace,
                subresource="status",
                resource_version=body["metadata"]["resourceVersion"],
            )
        except UnreadableAnswer:
            return body  # written; the run is nested too deep to read back: kopf's watch brings it

    def _written(self, key: RunKey, patched: dict[str, JSON], old: JobStatus, new: JobStatus) -> None:
        self.remember(key, patched)
        for kind, reason, message in changes(old, new):
            self.events.record(patched, kind, reason, message)
        metrics.count(old, new)

    async def _fail_refused(
        self, key: RunKey, body: dict[str, JSON], old: JobStatus, error: ApiError
    ) -> JobStatus:
        """The run fails with a short message on top of what was written before,
        instead of planning the same refused write again and again."""
        generation = body.get("metadata", {}).get("generation")
        patch = refused_status(old, error, self.clock(), generation)
        logger.warning("run %s: status refused by the API server, failing the run: %s", key, error)
        failed = JobStatus.model_validate({**old.dump(), **patch})
        try:
            patched = await self._patch(key, body, patch)
        except ApiError as again:
            if not refused(again):
                raise
            self.set_aside.report(
                body, "run", "StatusRefused", f"the run's status cannot be written: {again}"
            )
            return old
        self._written(key, patched, old, failed)
        return failed
