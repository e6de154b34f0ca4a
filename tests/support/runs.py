"""Runs (kwf Jobs) in a test cluster: apply, read, wait on, with generous deadlines.

Waiting polls the API server (never sleeps and hopes): the predicate decides,
the deadline only bounds how long a broken build takes to say so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from kwf.api import JobPhase
from kwf.k8s.api import BATCH_JOBS, KWF_JOBS, WORKFLOWS, Client, NotFound

JSON = Any
T = TypeVar("T")


class Timeout(AssertionError):
    pass


def run_body(name: str, steps: list[dict[str, JSON]] | None = None, **spec: JSON) -> dict[str, JSON]:
    """A kwf Job; ``spec`` in wire (camelCase) names."""
    body_spec = dict(spec)
    if steps is not None:
        body_spec["steps"] = steps
    return {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": body_spec,
    }


def script(name: str, source: str, **fields: JSON) -> dict[str, JSON]:
    return {"name": name, "script": {"language": "python", "source": source}, **fields}


def shell(name: str, source: str, **fields: JSON) -> dict[str, JSON]:
    return {"name": name, "script": {"language": "shell", "source": source}, **fields}


async def apply_run(api: Client, namespace: str, body: Mapping[str, JSON]) -> dict[str, JSON]:
    return await api.create(KWF_JOBS, body, namespace)


async def apply_workflow(api: Client, namespace: str, name: str, spec: Mapping[str, JSON]) -> dict[str, JSON]:
    body = {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": spec,
    }
    return await api.create(WORKFLOWS, body, namespace)


async def get_run(api: Client, namespace: str, name: str) -> dict[str, JSON]:
    return await api.get(KWF_JOBS, name, namespace)


async def patch_spec(api: Client, namespace: str, name: str, spec: Mapping[str, JSON]) -> dict[str, JSON]:
    return await api.patch(KWF_JOBS, name, {"spec": dict(spec)}, namespace)


async def children(api: Client, namespace: str, run: str | None = None) -> list[dict[str, JSON]]:
    selector = "app.kubernetes.io/managed-by=kwf"
    if run:
        selector += f",workflow.kwf.dev/job={run}"
    listing = await api.list(BATCH_JOBS, namespace, label_selector=selector)
    return list(listing.get("items") or [])


async def wait_for(
    fetch: Callable[[], Awaitable[T]],
    predicate: Callable[[T], bool],
    *,
    within: float = 120.0,
    interval: float = 0.2,
    what: str = "the condition",
) -> T:
    """Poll ``fetch`` until ``predicate`` holds; a Timeout shows the last value seen."""
    deadline = time.monotonic() + within
    last: T | None = None
    while True:
        try:
            last = await fetch()
            if predicate(last):
                return last
        except NotFound:
            pass
        if time.monotonic() > deadline:
            raise Timeout(f"{what} did not hold within {within}s; last seen: {last!r}"[:4000])
        await asyncio.sleep(interval)


def phase(run: Mapping[str, JSON]) -> str | None:
    return (run.get("status") or {}).get("phase")


def is_finished(run: Mapping[str, JSON]) -> bool:
    value = phase(run)
    return value is not None and JobPhase(value).finished


async def finished(api: Client, namespace: str, name: str, within: float = 180.0) -> dict[str, JSON]:
    return await wait_for(
        lambda: get_run(api, namespace, name),
        is_finished,
        within=within,
        what=f"run {namespace}/{name} finished",
    )


def condition(run: Mapping[str, JSON], kind: str) -> dict[str, JSON] | None:
    for item in (run.get("status") or {}).get("conditions") or ():
        if item.get("type") == kind:
            return dict(item)
    return None


def step_status(run: Mapping[str, JSON], step: str) -> dict[str, JSON]:
    """The step's entry in status; empty while the operator has not written one."""
    for item in (run.get("status") or {}).get("steps") or ():
        if item.get("name") == step:
            return dict(item)
    return {}
