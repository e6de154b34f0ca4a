"""A run's status write: the merge patch from the last status to the new one,
the child Jobs it records, and what is written when the API server refuses it.

Status is the one record of a run, so a write the API server refuses (too
large, or invalid in a way plan() did not foresee) must still end the run
with a message: retrying the same write would wedge it forever.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pydantic

from kwf.api import JobPhase, JobStatus
from kwf.engine.health import Reason, health_conditions
from kwf.engine.validation import field_path
from kwf.k8s.api import ApiError

JSON = Any

_STATUS_FIELDS = frozenset(field.alias or name for name, field in JobStatus.model_fields.items())
REFUSAL_CAP = 300


def describe(error: pydantic.ValidationError, prefix: str = "") -> str:
    """``spec.steps[0].name: String should match pattern ...; ...`` (wire names)."""
    parts = []
    for item in error.errors()[:5]:
        path = field_path([prefix, *item["loc"]] if prefix else list(item["loc"]))
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


def status_patch(before: Mapping[str, JSON], new: JobStatus) -> dict[str, JSON] | None:
    """The merge patch from the written status to ``new``; None when nothing changed.
    Fields this version of kwf does not know are left as they are."""
    diff = merge_diff(dict(before), new.dump())
    if isinstance(diff, dict):
        diff = {k: v for k, v in diff.items() if v is not None or k in _STATUS_FIELDS}
    return diff or None


def with_children(status: JobStatus, launched: Mapping[str, str], uids: Mapping[str, str]) -> JobStatus:
    """``status`` with each launched step's child Job name, and the uid of every
    step's current child Job, so that the launch's own status patch records
    which child is the run's (the watch event would otherwise cost a second)."""
    steps = []
    for entry in status.steps:
        job = launched.get(entry.name, entry.job)
        uid = uids.get(job) if job else None
        if job is None:
            uid = None
        elif uid is None and job == entry.job:
            uid = entry.job_uid  # the child is gone (collected): its record stays
        if (job, uid) != (entry.job, entry.job_uid):
            entry = entry.model_copy(update={"job": job, "job_uid": uid})
        steps.append(entry)
    return status.model_copy(update={"steps": steps})


def refused(error: ApiError) -> bool:
    """Whether the API server refused the write for what it holds, not for a
    passing reason: retrying the same write could never succeed."""
    if error.status in (413, 422):
        return True
    return "too large" in error.message.lower() or "too long" in error.message.lower()


def refused_status(
    status: JobStatus, error: ApiError, now: datetime, generation: int | None
) -> dict[str, JSON]:
    """The small patch that fails a run whose status the API server refused:
    what was written before stays; only the phase, message and conditions change."""
    detail = error.message if len(error.message) <= REFUSAL_CAP else error.message[: REFUSAL_CAP - 3] + "..."
    message = f"the run's status could not be written ({error.status} {error.reason}): {detail}"
    conditions = health_conditions(status.conditions, Reason.FAILED, message, now, generation)
    failed = status.model_copy(
        update={
            "phase": JobPhase.FAILED,
            "message": message,
            "finished_at": status.finished_at or now,
            "conditions": conditions,
        }
    ).dump()
    return {key: failed[key] for key in ("phase", "message", "finishedAt", "conditions")}
