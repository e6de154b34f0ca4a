"""``kwf submit``: create the runs (and Workflows) a file describes.

Every document is validated before anything is created, so a bad file
creates nothing: with :func:`kwf.engine.validation.problems`, as ``kwf lint``
does, so what lint passes submit sends and what it refuses submit refuses.
A Workflow is created, or its spec replaced when it exists (like ``kubectl
apply``); ``--run`` then starts a Job referencing it. A Job without a name
gets a generated one, so submitting a file twice starts two runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kwf.api import GROUP, VERSION, Workflow
from kwf.clusterctl.connect import EXIT_BAD_INPUT, CliError
from kwf.engine import validation
from kwf.k8s.api import KWF_JOBS, WORKFLOWS, AlreadyExists, Client
from kwf.local.source import SourceError, parse_document, read_documents

JSON = Any


@dataclasses.dataclass(frozen=True)
class Submission:
    """What to create, in order: Workflows first (runs may reference them)."""

    workflows: tuple[dict[str, JSON], ...]
    jobs: tuple[dict[str, JSON], ...]


def plan_submission(
    path: Path, params: Mapping[str, JSON], *, start_run: bool, namespace: str, explicit: bool = False
) -> Submission:
    """The objects to create from ``path``; raises CliError naming the document and field.

    An object's own ``metadata.namespace`` is kept, as kubectl does; with an
    explicit ``-n`` that differs, the file is refused rather than guessed at.
    """
    try:
        docs = read_documents(path)
    except SourceError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    if not docs:
        raise CliError(f"{path}: no Job or Workflow in the file", EXIT_BAD_INPUT)
    workflows: list[dict[str, JSON]] = []
    jobs: list[dict[str, JSON]] = []
    for doc in docs:
        _refuse_problems(validation.problems(doc.data), doc.where, doc.kind)
        parsed = parse_document(doc)
        # Send what the user wrote (validated), not the model's defaults filled in.
        body = {k: v for k, v in dict(doc.data).items() if k != "status"}
        meta = dict(body.get("metadata") or {})
        own = meta.get("namespace")
        if own and explicit and own != namespace:
            raise CliError(
                f"{doc.where}: metadata.namespace is {own!r}, but -n says {namespace!r}", EXIT_BAD_INPUT
            )
        body["metadata"] = {**meta, "namespace": own or namespace}
        if isinstance(parsed, Workflow):
            if not parsed.metadata.name:
                raise CliError(f"{doc.where}: metadata.name: a Workflow needs a name", EXIT_BAD_INPUT)
            workflows.append(body)
        else:
            jobs.append(_with_params(_named(body, path.stem), params))
    if start_run:
        if len(workflows) != 1:
            raise CliError(
                f"{path}: --run starts a run of the file's Workflow, but it holds {len(workflows)}",
                EXIT_BAD_INPUT,
            )
        meta = workflows[0]["metadata"]
        name = meta["name"]
        job = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Job",
            "metadata": {"generateName": f"{name}-", "namespace": meta["namespace"]},
            "spec": {"workflowRef": {"name": name}},
        }
        jobs.append(_with_params(job, params))
    if params and not jobs:
        raise CliError("--param: the file holds no Job to pass params to (add --run)", EXIT_BAD_INPUT)
    for job in jobs:
        _check_job(job, path)
    return Submission(tuple(workflows), tuple(jobs))


def _named(body: dict[str, JSON], stem: str) -> dict[str, JSON]:
    meta = body["metadata"]
    if not meta.get("name") and not meta.get("generateName"):
        body["metadata"] = {**meta, "generateName": f"{stem}-"}
    return body


def _with_params(body: dict[str, JSON], params: Mapping[str, JSON]) -> dict[str, JSON]:
    if not params:
        return body
    spec = dict(body.get("spec") or {})
    spec["params"] = {**(spec.get("params") or {}), **params}
    return {**body, "spec": spec}


def _check_job(body: Mapping[str, JSON], path: Path) -> None:
    """The params from the command line must still make a valid Job."""
    _refuse_problems(validation.problems({**body, "metadata": {}}), str(path), "Job")


def _refuse_problems(found: list[validation.Problem], where: str, kind: str | None) -> None:
    if found:
        lines = "\n".join(f"  {problem}" for problem in found)
        raise CliError(f"{where}: not a valid {kind or 'Job or Workflow'}:\n{lines}", EXIT_BAD_INPUT)


async def submit(api: Client, plan: Submission) -> list[tuple[str, dict[str, JSON]]]:
    """Create everything; returns (what happened, object) pairs in order."""
    done: list[tuple[str, dict[str, JSON]]] = []
    for workflow in plan.workflows:
        name, namespace = workflow["metadata"]["name"], workflow["metadata"]["namespace"]
        try:
            done.append(("created", await api.create(WORKFLOWS, workflow, namespace)))
        except AlreadyExists:
            live = await api.get(WORKFLOWS, name, namespace)
            body = {**workflow, "metadata": {**live["metadata"], **workflow["metadata"]}}
            # PUT with the live resourceVersion: a concurrent edit gets Conflict, not lost.
            done.append(("configured", await api.replace(WORKFLOWS, name, body, namespace)))
    for job in plan.jobs:
        namespace = job["metadata"]["namespace"]
        try:
            done.append(("created", await api.create(KWF_JOBS, job, namespace)))
        except AlreadyExists:
            name = job["metadata"].get("name")
            raise CliError(
                f"run {name!r} already exists in namespace {namespace!r}; a run starts once:"
                " give another metadata.name, or leave it out to have one generated",
                EXIT_BAD_INPUT,
            ) from None
    return done
