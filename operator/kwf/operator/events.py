"""Kubernetes Events for what a user watches with ``kubectl describe``: phase
changes and step failures. Posting never delays a reconcile and never fails it.

Each object gets its Events through a token bucket (a burst, then one every
few seconds): a run that fails a step a second cannot flood the namespace or
the API server. The next Event that passes says how many were held back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from kwf.api import GROUP, VERSION, Condition, JobPhase, JobStatus, StepPhase
from kwf.k8s.api import EVENTS, ApiError, Client

JSON = Any
logger = logging.getLogger(__name__)
MESSAGE_CAP = 1024
BURST = 10
REFILL_SECONDS = 10.0


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


@dataclasses.dataclass
class _Bucket:
    tokens: float
    at: float
    held: int = 0


class RateLimit:
    """A token bucket per object: ``burst`` Events at once, then one per ``refill_seconds``."""

    def __init__(
        self,
        burst: int = BURST,
        refill_seconds: float = REFILL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst, self.refill_seconds, self.clock = burst, refill_seconds, clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str) -> int | None:
        """None: hold this Event back. Else the number held back since the last one."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(tokens=float(self.burst), at=now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) / self.refill_seconds)
        bucket.at = now
        if bucket.tokens < 1.0:
            bucket.held += 1
            return None
        bucket.tokens -= 1.0
        held, bucket.held = bucket.held, 0
        return held

    def forget(self, key: str) -> None:
        self._buckets.pop(key, None)


def with_held(message: str, held: int) -> str:
    """The message, cut to the cap, with the count of Events held back before it."""
    note = f" ({held} earlier event{'s' if held != 1 else ''} not posted: too many)" if held else ""
    return message[: MESSAGE_CAP - len(note)] + note


class EventRecorder:
    def __init__(
        self, api: Client, *, component: str = "kwf-operator", limit: RateLimit | None = None
    ) -> None:
        self._api = api
        self._component = component
        self._limit = limit or RateLimit()
        self._tasks: set[asyncio.Task[None]] = set()

    def record(
        self, obj: Mapping[str, JSON], kind: Literal["Normal", "Warning"], reason: str, message: str
    ) -> None:
        """Post an Event about ``obj`` (a run, or a Workflow) unless its bucket is empty."""
        meta = obj.get("metadata") or {}
        key = str(meta.get("uid") or f"{meta.get('namespace')}/{obj.get('kind')}/{meta.get('name')}")
        held = self._limit.take(key)
        if held is None:
            return
        task = asyncio.get_running_loop().create_task(self._post(obj, kind, reason, with_held(message, held)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def forget(self, uid: str) -> None:
        self._limit.forget(uid)

    async def _post(self, obj: Mapping[str, JSON], kind: str, reason: str, message: str) -> None:
        meta = obj.get("metadata", {})
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name')}.", "namespace": meta.get("namespace")},
            "involvedObject": {
                "apiVersion": str(obj.get("apiVersion") or f"{GROUP}/{VERSION}"),
                "kind": str(obj.get("kind") or "Job"),
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
