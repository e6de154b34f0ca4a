"""An in-memory index of every run's child Jobs and their pods, fed by watches.

A reconcile reads what exists from here, never from the API: the watches keep
it current, and the operator puts what it creates in at once (so a child it
just made is never mistaken for a missing one before its watch event comes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Container, Mapping
from typing import Any

from kwf.engine.types import Attempt, Observed
from kwf.k8s.manifests import LABEL_JOB_UID
from kwf.k8s.observe import attempt_of, controller_uid, is_child_of, needs_log, termination
from kwf.steps.results import Framed

JSON = Any


@dataclasses.dataclass(frozen=True)
class RunKey:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclasses.dataclass
class _Child:
    job: dict[str, JSON]
    pod: dict[str, JSON] | None = None
    pod_vanished: bool = False
    log: str | None = None


def _uid(obj: Mapping[str, JSON]) -> str:
    return str(obj.get("metadata", {}).get("uid") or "")


def _newer(old: Mapping[str, JSON] | None, new: Mapping[str, JSON]) -> bool:
    """Whether ``new`` is not older than ``old`` (a create's answer can race its watch event)."""
    if old is None:
        return True
    try:
        return int(new["metadata"]["resourceVersion"]) >= int(old["metadata"]["resourceVersion"])
    except (KeyError, ValueError):
        return True


def _namespace(obj: Mapping[str, JSON]) -> str:
    return str(obj.get("metadata", {}).get("namespace") or "")


class ChildIndex:
    """``result_cap``: the operator's cap on a result framed in a pod's log."""

    def __init__(self, result_cap: int | None = None) -> None:
        self.result_cap = result_cap
        self._children: dict[str, dict[str, _Child]] = {}  # run uid -> child Job uid -> child
        self._run_of_child: dict[str, str] = {}  # child Job uid -> run uid
        self._pods: dict[str, dict[str, JSON]] = {}  # child Job uid -> pod seen before its Job
        self._runs: dict[str, RunKey] = {}  # run uid -> where it is

    # -- runs

    def remember_run(self, uid: str, key: RunKey) -> None:
        self._runs[uid] = key

    def forget_run(self, uid: str) -> None:
        self._runs.pop(uid, None)
        for child_uid in self._children.pop(uid, {}):
            self._run_of_child.pop(child_uid, None)
            self._pods.pop(child_uid, None)

    def run_key(self, run_uid: str | None) -> RunKey | None:
        return self._runs.get(run_uid) if run_uid else None

    # -- children

    def put_job(self, job: dict[str, JSON]) -> RunKey | None:
        """A child Job was seen (or created); returns the run to look at again,
        None when nothing its plan reads has changed."""
        run_uid, uid = controller_uid(job), _uid(job)
        if not run_uid or not uid or not is_child_of(job, run_uid):
            return None
        children = self._children.setdefault(run_uid, {})
        child = children.get(uid)
        if child is None:
            child = children[uid] = _Child(job=job, pod=self._pods.pop(uid, None))
            before = None
        else:
            before = self._seen(child)
            if _newer(child.job, job):
                child.job = job
        self._run_of_child[uid] = run_uid
        return self._runs.get(run_uid) if self._seen(child) != before else None

    def delete_job(self, job: Mapping[str, JSON]) -> RunKey | None:
        uid = _uid(job)
        run_uid = self._run_of_child.pop(uid, None)
        self._pods.pop(uid, None)
        if run_uid is None:
            return None
        self._children.get(run_uid, {}).pop(uid, None)
        return self._runs.get(run_uid)

    def put_pod(self, pod: dict[str, JSON], *, deleted: bool = False) -> RunKey | None:
        job_uid = controller_uid(pod)
        if not job_uid:
            return None
        run_uid = self._run_of_child.get(job_uid)
        if run_uid is None:
            # The pod's watch can be ahead of the Job's: keep it for when the Job comes.
            if not deleted:
                self._pods[job_uid] = pod
            else:
                self._pods.pop(job_uid, None)
            return self._runs.get(str(pod.get("metadata", {}).get("labels", {}).get(LABEL_JOB_UID)))
        child = self._children[run_uid][job_uid]
        if _namespace(pod) != _namespace(child.job):
            return None  # an owner reference reaches no further than its namespace
        before = self._seen(child)
        if deleted:
            if child.pod is not None and _uid(child.pod) == _uid(pod):
                final = pod if _newer(child.pod, pod) else child.pod
                if attempt_of(child.job, final) is not None and not _terminated(final):
                    child.pod_vanished = True
                child.pod = final if _terminated(final) else None
        elif child.pod is None or _uid(child.pod) != _uid(pod) or _newer(child.pod, pod):
            child.pod = pod
        return self._runs.get(run_uid) if self._seen(child) != before else None

    def put_log(self, job_uid: str, log: str) -> None:
        run_uid = self._run_of_child.get(job_uid)
        if run_uid is not None:
            self._children[run_uid][job_uid].log = log

    # -- reading

    def observe(self, run_uid: str, accepted: Container[str] | None = None) -> Observed:
        """Every attempt of the run, by step (of the children in ``accepted`` only, if given)."""
        attempts: dict[str, list[Attempt]] = {}
        for uid, child in self._children.get(run_uid, {}).items():
            if accepted is not None and uid not in accepted:
                continue
            attempt = self._attempt(child)
            if attempt is not None:
                attempts.setdefault(attempt.step, []).append(attempt)
        return attempts

    def logs_wanted(
        self, run_uid: str, accepted: Container[str] | None = None
    ) -> list[tuple[str, str, str, Framed]]:
        """(child Job uid, namespace, pod name, what its end said) of pods whose
        result is in their log, unread."""
        wanted = []
        for uid, child in self._children.get(run_uid, {}).items():
            if accepted is not None and uid not in accepted:
                continue
            framed = needs_log(child.pod, self.result_cap) if child.log is None else None
            if framed is not None and child.pod is not None:
                meta = child.pod["metadata"]
                wanted.append((uid, meta["namespace"], meta["name"], framed))
        return wanted

    def child_jobs(self, run_uid: str) -> dict[str, dict[str, JSON]]:
        """The run's child Jobs by uid: every Job that claims the run, launched or not."""
        return {uid: child.job for uid, child in self._children.get(run_uid, {}).items()}

    def children(self, run_uid: str) -> list[dict[str, JSON]]:
        return [child.job for child in self._children.get(run_uid, {}).values()]

    def runs(self) -> list[RunKey]:
        return list(self._runs.values())

    def _attempt(self, child: _Child) -> Attempt | None:
        return attempt_of(
            child.job, child.pod, pod_vanished=child.pod_vanished, log=child.log, result_cap=self.result_cap
        )

    def _seen(self, child: _Child) -> tuple[Attempt | None, bool]:
        """All a reconcile reads of one child: its attempt, and whether a log is to be read.
        Most pod and Job events (scheduled, pulling, started) change neither."""
        return self._attempt(child), child.log is None and needs_log(child.pod, self.result_cap) is not None


def _terminated(pod: Mapping[str, JSON]) -> bool:
    return termination(pod) is not None
