"""Kubernetes Events for what a user watches with ``kubectl describe``: phase
changes and step failures. Posting never delays a reconcile and never fails it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from kwf.api import GROUP, VERSION, Condition, JobPhase, JobStatus, StepPhase
from kwf.k8s.api import EVENTS, ApiError, Client

JSON = Any
logger = logging.getLogger(__name__)
MESSAGE_CAP = 1024


def changes(old: JobStatus, new: JobStatus) -> list[tuple[Literal["Normal", "Warning"], str, str]]:
    """(type, reason, message) of each thing worth an Event between two statuses."""
    found: list[tuple[Literal["Normal", "Warning"], str, str]] = []
    if new.phase != old.phase:
        kind: Literal["Normal", "Warning"] = "Warning" if new.phase is JobPhase.FAILED else "Normal"
        text = f"run is {new.phase.value.lower()}"
        if new.message and new.phase.finished:
            text += f": {new.message}"
        found.append((kind, new.phase.value, text))
    # A finished run is Stalled too; its phase's Event says why already.
    stalled, was = _stalled(new), _stalled(old)
    if stalled is not None and not new.phase.finished and (was is None or was.message != stalled.message):
        found.append(("Warning", stalled.reason, stalled.message))
    before = {step.name: step for step in old.steps}
    for step in new.steps:
        prior = before.get(step.name)
        failed_now = step.phase is StepPhase.FAILED and (prior is None or prior.phase is not StepPhase.FAILED)
        retrying = (
            step.phase is StepPhase.WAITING
            and prior is not None
            and (prior.phase is not StepPhase.WAITING or prior.attempts != step.attempts)
        )
        # A failure noticed after its backoff was over goes straight to the next attempt.
        relaunched = (
            step.phase is StepPhase.RUNNING
            and prior is not None
            and prior.phase is StepPhase.RUNNING
            and 0 < prior.attempts < step.attempts
        )
        if failed_now:
            found.append(
                ("Warning", "StepFailed", f"step {step.name} failed: {step.message or 'no message'}")
            )
        elif retrying:
            found.append(
                (
                    "Warning",
                    "StepRetrying",
                    f"step {step.name} attempt {step.attempts} failed: {step.message or ''}",
                )
            )
        elif relaunched and prior is not None:
            detail = f": {step.message}" if step.message else ""
            found.append(
                ("Warning", "StepRetrying", f"step {step.name} attempt {prior.attempts} failed{detail}")
            )
    return found


def _stalled(status: JobStatus) -> Condition | None:
    """The run's Stalled condition when it is true: a spec the operator cannot run."""
    for condition in status.conditions:
        if condition.type == "Stalled" and condition.status == "True":
            return condition
    return None


class EventRecorder:
    def __init__(self, api: Client, *, component: str = "kwf-operator") -> None:
        self._api = api
        self._component = component
        self._tasks: set[asyncio.Task[None]] = set()

    def record(
        self, run: Mapping[str, JSON], kind: Literal["Normal", "Warning"], reason: str, message: str
    ) -> None:
        task = asyncio.get_running_loop().create_task(self._post(run, kind, reason, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, run: Mapping[str, JSON], kind: str, reason: str, message: str) -> None:
        meta = run.get("metadata", {})
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name')}.", "namespace": meta.get("namespace")},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Job",
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "type": kind,
            "reason": reason,
            "message": message[:MESSAGE_CAP],
            "source": {"component": self._component},
            "reportingComponent": self._component,
            "reportingInstance": self._component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._api.create(EVENTS, event, meta.get("namespace"))
        except (ApiError, OSError) as error:
            logger.debug("event not posted: %s", error)
        except Exception as error:  # an Event is never worth a failed reconcile
            logger.debug("event not posted: %r", error)

    async def drain(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
