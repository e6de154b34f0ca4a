"""Which child Jobs are a run's attempts: only those kwf launched.

Anyone who may create batch Jobs in a run's namespace can give one the run's
labels and an ownerReference to it. Such a Job must never pass for an
attempt: its result would be applied as the step's. A child counts only when
it is in the run's namespace, has the name kwf gives that attempt, and is the
one kwf created: its uid is one this operator created (or found under that
name, holding exactly what kwf would have created), or the one the run's
status recorded at launch. A pod counts only through such a child (the index
keeps pods by their owner). Anything else is left alone and reported once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from kwf.api import JobStatus
from kwf.k8s.index import RunKey
from kwf.k8s.manifests import child_name
from kwf.k8s.observe import step_and_number

JSON = Any


@dataclasses.dataclass(frozen=True)
class Verdict:
    accepted: frozenset[str]  # child Job uids
    names: Mapping[str, str]  # child Job name -> uid, of the accepted
    foreign: Mapping[str, str]  # child Job uid -> why it is not the run's


def why_not(
    run: RunKey, status: JobStatus, job: Mapping[str, JSON], uid: str, launched: frozenset[str]
) -> str | None:
    """None when ``job`` is one of the run's attempts, else why not."""
    meta = job.get("metadata") or {}
    name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
    ident = step_and_number(job)
    if ident is None:
        return "its step and attempt labels are missing"
    step, number = ident
    if namespace != run.namespace:
        return f"it is in namespace {namespace}, not the run's"
    if name != child_name(run.name, step, number):
        return f"its name is not the one kwf gives attempt {number} of step {step}"
    if uid in launched:
        return None
    entry = next((e for e in status.steps if e.name == step), None)
    if entry is not None and entry.job == name:
        if entry.job_uid == uid:
            return None
        if entry.job_uid is None and number == entry.last_attempt:
            return None  # recorded before kwf kept the uid: the name alone was written
    return f"kwf did not launch it (step {step} attempt {number})"


class Children:
    """The child Jobs this operator created or adopted, by run: the record that
    covers the time between a launch and the status write that records it."""

    def __init__(self) -> None:
        self._launched: dict[str, set[str]] = {}  # run uid -> child Job uids

    def launched(self, run_uid: str, child_uid: str) -> None:
        self._launched.setdefault(run_uid, set()).add(child_uid)

    def forget_run(self, run_uid: str) -> None:
        self._launched.pop(run_uid, None)

    def judge(
        self, run: RunKey, run_uid: str, status: JobStatus, jobs: Mapping[str, Mapping[str, JSON]]
    ) -> Verdict:
        launched = frozenset(self._launched.get(run_uid, ()))
        accepted, names, foreign = set(), {}, {}
        for uid, job in jobs.items():
            problem = why_not(run, status, job, uid, launched)
            if problem is None:
                accepted.add(uid)
                names[str(job["metadata"]["name"])] = uid
            else:
                foreign[uid] = problem
        return Verdict(frozenset(accepted), names, foreign)
