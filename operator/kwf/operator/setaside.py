"""Objects the operator leaves alone, and says so once.

A Workflow nested too deeply to read, a run that cannot be planned, a child
Job kwf did not launch: each is set aside with a Warning Event (and, for a
Workflow, a Stalled condition in its status), written once per object and
problem, never once per pass. Every other run and Workflow goes on.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kwf.api import GROUP, VERSION
from kwf.k8s.api import WORKFLOWS, ApiError, Client, UnreadableAnswer
from kwf.operator import metrics
from kwf.operator.events import EventRecorder
from kwf.operator.metrics import SetAsideKind

JSON = Any
logger = logging.getLogger(__name__)

STALLED = "Stalled"
#: The reason of the Stalled condition on a Workflow the operator cannot read or use.
UNUSABLE = "InvalidWorkflow"


def _ident(obj: Mapping[str, JSON]) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace')}/{obj.get('kind')}/{meta.get('name')}")


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def said_stalled(workflow: Mapping[str, JSON], message: str) -> bool:
    """Whether the Workflow's status says it is Stalled for this very reason
    (so that a restarted operator does not report it again)."""
    conditions = (workflow.get("status") or {}).get("conditions") or []
    return any(
        c.get("type") == STALLED and c.get("status") == "True" and c.get("message") == message[:1024]
        for c in conditions
    )


class SetAside:
    def __init__(self, api: Client, events: EventRecorder) -> None:
        self.api = api
        self.events = events
        self._reported: dict[str, str] = {}  # object uid -> the problem reported

    def report(
        self,
        obj: Mapping[str, JSON],
        kind: SetAsideKind,
        reason: str,
        problem: str,
        *,
        about: Mapping[str, JSON] | None = None,
    ) -> bool:
        """Log and post a Warning Event about ``about`` (default: ``obj``), once
        per object and problem. Whether it was reported now."""
        ident = _ident(obj)
        if self._reported.get(ident) == problem:
            return False
        self._reported[ident] = problem
        meta = obj.get("metadata") or {}
        where = f"{obj.get('kind') or kind} {meta.get('namespace')}/{meta.get('name')}"
        logger.warning("%s set aside: %s", where, problem)
        metrics.set_aside(kind)
        self.events.record(about or obj, "Warning", reason, problem)
        return True

    def forget(self, obj: Mapping[str, JSON]) -> None:
        self._reported.pop(_ident(obj), None)

    def reported(self, obj: Mapping[str, JSON]) -> bool:
        return _ident(obj) in self._reported

    async def stall_workflow(self, workflow: Mapping[str, JSON], message: str, now: datetime) -> None:
        """Mark a Workflow Stalled with ``message``, unless it says so already."""
        meta = workflow.get("metadata") or {}
        if said_stalled(workflow, message):
            return
        old = list((workflow.get("status") or {}).get("conditions") or [])
        condition = {
            "type": STALLED,
            "status": "True",
            "reason": UNUSABLE,
            "message": message[:1024],
            "lastTransitionTime": _iso(now),
            "observedGeneration": meta.get("generation"),
        }
        conditions = [c for c in old if c.get("type") != STALLED] + [condition]
        await self._write_conditions(workflow, conditions)

    async def clear_workflow(self, workflow: Mapping[str, JSON]) -> None:
        """Take back the Stalled condition this module set, once the Workflow is usable."""
        old = list((workflow.get("status") or {}).get("conditions") or [])
        if not any(c.get("type") == STALLED and c.get("reason") == UNUSABLE for c in old):
            return
        conditions = [c for c in old if not (c.get("type") == STALLED and c.get("reason") == UNUSABLE)]
        await self._write_conditions(workflow, conditions)

    async def _write_conditions(self, workflow: Mapping[str, JSON], conditions: list[JSON]) -> None:
        meta = workflow.get("metadata") or {}
        name, namespace = meta.get("name"), meta.get("namespace")
        if not name or not namespace:
            return
        # Conditions are a list, replaced whole: checked against the version they were read at.
        with contextlib.suppress(UnreadableAnswer):  # written; the answer is as deep as the Workflow
            try:
                await self.api.patch(
                    WORKFLOWS,
                    str(name),
                    {"status": {"conditions": conditions}},
                    str(namespace),
                    subresource="status",
                    resource_version=meta.get("resourceVersion"),
                )
            except ApiError as error:
                # A Conflict means a newer version is on its way, and is judged again.
                logger.info("workflow %s/%s: condition not written: %s", namespace, name, error)


def workflow_ref(namespace: str, name: str) -> dict[str, JSON]:
    """Enough of a Workflow to post an Event about it."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Workflow",
        "metadata": {"namespace": namespace, "name": name},
    }
