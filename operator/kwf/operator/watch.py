"""Our own list+watch of child Jobs, their pods and the Workflows.

Child events go straight into the index and the run's queue: no framework in
between, so a step's end is acted on within milliseconds of the pod event.
After every (re)list, objects that vanished during a gap are dropped, so the
index never keeps a child that no longer exists.

One object never stops a watch: one the client cannot read comes with its
problem and is set aside; one whose handling fails is logged and skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import httpx2

from kwf.k8s.api import BATCH_JOBS, PODS, WORKFLOWS, ApiError, Client, Resource, WatchEvent
from kwf.k8s.manifests import SELECTOR
from kwf.operator.controller import Controller
from kwf.operator.schedules import Schedules

JSON = Any
logger = logging.getLogger(__name__)

RETRY_SECONDS = 2.0


async def _follow(
    api: Client,
    resource: Resource,
    namespace: str | None,
    selector: str | None,
    handle: Callable[[WatchEvent], None],
    synced: asyncio.Event,
) -> None:
    while True:
        try:
            async for event in api.list_and_watch(resource, namespace, label_selector=selector):
                try:
                    handle(event)
                except Exception:
                    meta = event.object.get("metadata") or {}
                    logger.exception(
                        "%s event of %s %s/%s not handled; skipped",
                        event.type,
                        resource.plural,
                        meta.get("namespace"),
                        meta.get("name"),
                    )
                if event.type == "SYNCED":
                    synced.set()
        except asyncio.CancelledError:
            raise
        except (ApiError, httpx2.HTTPError, OSError, ValueError) as error:
            logger.warning(
                "watch of %s in %s broke (%s); listing again", resource.plural, namespace or "*", error
            )
            await asyncio.sleep(RETRY_SECONDS)


class Watches:
    """The child and Workflow watches of one operator, per namespace or cluster-wide."""

    def __init__(
        self,
        api: Client,
        controller: Controller,
        namespaces: Sequence[str] | None,
        schedules: Schedules | None = None,
    ) -> None:
        self.api = api
        self.controller = controller
        self.schedules = schedules
        self.namespaces: list[str | None] = list(namespaces) if namespaces else [None]
        self._tasks: list[asyncio.Task[None]] = []
        self._seen_jobs: dict[str | None, set[str]] = {}
        self._seen_pods: dict[str | None, dict[str, dict[str, JSON]]] = {}

    async def start(self) -> None:
        flags: list[asyncio.Event] = []
        for namespace in self.namespaces:
            for resource, selector, handler in (
                (BATCH_JOBS, SELECTOR, self._on_job(namespace)),
                (PODS, SELECTOR, self._on_pod(namespace)),
                (WORKFLOWS, None, self._on_workflow),
            ):
                flag = asyncio.Event()
                flags.append(flag)
                task = asyncio.create_task(
                    _follow(self.api, resource, namespace, selector, handler, flag),
                    name=f"watch {resource.plural} {namespace or '*'}",
                )
                self._tasks.append(task)
        await asyncio.gather(*(flag.wait() for flag in flags))
        self.controller.synced.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_job(self, namespace: str | None) -> Callable[[WatchEvent], None]:
        seen = self._seen_jobs.setdefault(namespace, set())
        index, controller = self.controller.index, self.controller

        def handle(event: WatchEvent) -> None:
            if event.type == "SYNCED":
                current = {_uid(item) for item in event.object["items"]}
                for uid in seen - current:
                    controller.child_changed(index.delete_job({"metadata": {"uid": uid}}))
                seen.clear()
                seen.update(current)
                return
            uid = _uid(event.object)
            if event.type == "DELETED":
                seen.discard(uid)
                controller.child_changed(index.delete_job(event.object))
            elif event.problem is not None:
                seen.add(uid)
                controller.child_unreadable(event.object, "child_job", event.problem)
            else:
                seen.add(uid)
                controller.child_changed(index.put_job(event.object))

        return handle

    def _on_pod(self, namespace: str | None) -> Callable[[WatchEvent], None]:
        seen = self._seen_pods.setdefault(namespace, {})
        index, controller = self.controller.index, self.controller

        def handle(event: WatchEvent) -> None:
            if event.type == "SYNCED":
                current = {_uid(item) for item in event.object["items"]}
                for uid in set(seen) - current:
                    controller.child_changed(index.put_pod(seen.pop(uid), deleted=True))
                return
            uid = _uid(event.object)
            if event.type == "DELETED":
                seen.pop(uid, None)
                controller.child_changed(index.put_pod(event.object, deleted=True))
            elif event.problem is not None:
                controller.child_unreadable(event.object, "pod", event.problem)
            else:
                seen[uid] = event.object
                controller.child_changed(index.put_pod(event.object))

        return handle

    def _on_workflow(self, event: WatchEvent) -> None:
        if event.type == "SYNCED":
            return
        deleted = event.type == "DELETED"
        self.controller.workflow_changed(event.object, deleted=deleted, problem=event.problem)
        if self.schedules is not None and (deleted or event.problem is None):
            self.schedules.workflow_changed(event.object, deleted=deleted)


def _uid(obj: dict[str, JSON]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")
