"""Reading and writing a run's shared state from outside the operator.

A write is a JSON merge patch (RFC 7386) of ``status.sharedState`` through the
status subresource, made conditional on the resourceVersion it was checked
against: the size limit is judged on the state the patch lands on, and a
writer that raced us shows up as 409 Conflict. Then we read again and retry.
Since the patch names only its own keys, keys written by others (the operator
merging a step's result, another user) are never overwritten.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from kwf.clusterctl.connect import EXIT_BAD_INPUT, EXIT_CLUSTER, EXIT_NOT_FOUND, CliError, patch_run, read_run
from kwf.engine.state import json_size, merge_patch, size_problem
from kwf.engine.types import Limits
from kwf.k8s.api import Client, Conflict

JSON = Any

ATTEMPTS = 5


@dataclasses.dataclass(frozen=True)
class Written:
    """The state after a write, and how many attempts it took (more than one: raced)."""

    state: dict[str, JSON]
    attempts: int
    resource_version: str


def shared_state(obj: Mapping[str, JSON]) -> dict[str, JSON]:
    state = (obj.get("status") or {}).get("sharedState")
    return dict(state) if isinstance(state, Mapping) else {}


def lookup(state: Mapping[str, JSON], key: str) -> JSON:
    """The value at a dotted ``key`` (``a.b``); raises CliError(not found)."""
    value: JSON = state
    walked: list[str] = []
    for part in key.split("."):
        walked.append(part)
        if not isinstance(value, Mapping) or part not in value:
            raise CliError(f"no key {'.'.join(walked)!r} in the shared state", EXIT_NOT_FOUND)
        value = value[part]
    return value


def patch_from_assignments(values: Mapping[str, JSON]) -> dict[str, JSON]:
    """``{"a.b": 1, "c": null}`` as the merge patch ``{"a": {"b": 1}, "c": null}``.

    A null value removes the key, as in any merge patch.
    """
    patch: dict[str, JSON] = {}
    for key, value in values.items():
        parts = key.split(".")
        if any(not part for part in parts):
            raise CliError(f"state key {key!r}: empty part in a dotted key", EXIT_BAD_INPUT)
        nested: JSON = value
        for part in reversed(parts[1:]):
            nested = {part: nested}
        existing = patch.get(parts[0])
        patch[parts[0]] = (
            merge_patch(existing, nested)
            if isinstance(existing, Mapping) and isinstance(nested, Mapping)
            else nested
        )
    return patch


async def update_shared_state(
    api: Client,
    namespace: str,
    name: str,
    patch: Mapping[str, JSON],
    *,
    current: Mapping[str, JSON] | None = None,
    attempts: int = ATTEMPTS,
    limit: int = Limits().state_bytes,
) -> Written:
    """Merge ``patch`` into the run's shared state, retrying on Conflict.

    ``current`` is the run as the caller last read it: the first attempt is
    checked against its resourceVersion (so a caller that decided on what it
    read learns when that changed); without it, the run is read first.
    """
    obj = current if current is not None else await read_run(api, namespace, name)
    for attempt in range(1, attempts + 1):
        merged = merge_patch(shared_state(obj), patch)
        problem = size_problem("the shared state", json_size(merged), limit)
        if problem:
            raise CliError(f"run {name!r}: {problem}; nothing written", EXIT_BAD_INPUT)
        version = str(obj["metadata"]["resourceVersion"])
        try:
            written = await patch_run(
                api,
                namespace,
                name,
                {"status": {"sharedState": dict(patch)}},
                subresource="status",
                resource_version=version,
            )
        except Conflict:
            obj = await read_run(api, namespace, name)
            continue
        return Written(shared_state(written), attempt, str(written["metadata"]["resourceVersion"]))
    raise CliError(
        f"run {name!r} in namespace {namespace!r}: its status kept changing;"
        f" gave up after {attempts} attempts",
        EXIT_CLUSTER,
    )
