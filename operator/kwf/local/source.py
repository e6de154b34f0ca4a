"""Read a workflow file into the one run that ``kwf run`` carries out.

A file holds a Job, a Workflow, or several documents (``---``). A Workflow runs
with its defaults; a Job with ``workflowRef`` takes its steps from a Workflow of
that name in the same file or in another YAML file of the same directory, the
way the operator would find it in the Job's namespace.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic
import yaml

from kwf.api import Job, JobSpec, Workflow, WorkflowRef
from kwf.engine.validation import field_path

JSON = Any

KINDS = ("Job", "Workflow")


class SourceError(ValueError):
    """A file that cannot be run; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class Document:
    """One YAML document of a file, as parsed (plain data, not yet validated)."""

    path: Path
    index: int  # 1-based, as people count documents
    count: int  # documents in the file
    data: JSON

    @property
    def where(self) -> str:
        """``file`` or ``file#N`` when the file holds more than one document."""
        return str(self.path) if self.count == 1 else f"{self.path}#{self.index}"

    @property
    def kind(self) -> str | None:
        kind = self.data.get("kind") if isinstance(self.data, Mapping) else None
        return kind if isinstance(kind, str) else None

    @property
    def name(self) -> str | None:
        meta = self.data.get("metadata") if isinstance(self.data, Mapping) else None
        name = meta.get("name") if isinstance(meta, Mapping) else None
        return name if isinstance(name, str) else None


def read_documents(path: Path) -> list[Document]:
    """Every non-empty document of a YAML file; raises SourceError on bad YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SourceError(f"{path}: {exc.strerror or exc}") from exc
    try:
        loaded = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise SourceError(f"{path}: not valid YAML: {exc}") from exc
    return [Document(path, i, len(loaded), data) for i, data in enumerate(loaded, start=1)]


def parse_document(doc: Document) -> Job | Workflow:
    """Validate one document as a Job or a Workflow (pydantic errors propagate)."""
    if not isinstance(doc.data, Mapping):
        raise SourceError(f"{doc.where}: a document must be a mapping, not {type(doc.data).__name__}")
    if doc.kind == "Job":
        return Job.model_validate(doc.data)
    if doc.kind == "Workflow":
        return Workflow.model_validate(doc.data)
    raise SourceError(f"{doc.where}: kind: expected one of {', '.join(KINDS)}, got {doc.kind!r}")


@dataclasses.dataclass(frozen=True)
class Run:
    """What to run: a Job whose spec has its steps inline, params and initial
    state already merged from the Workflow's defaults and the command line."""

    job: Job
    source: Path
    workflow: str | None = None  # the Workflow it came from, if any


def load_run(
    source: Path | str | Job | Workflow,
    params: Mapping[str, JSON] | None = None,
    state: Mapping[str, JSON] | None = None,
) -> Run:
    """The run a file (or an already parsed Job or Workflow) describes.

    ``params`` and ``state`` are applied over the file's own values, key by key.
    """
    if isinstance(source, (Job, Workflow)):
        return _merge(source, Path("<memory>"), {}, params or {}, state or {})
    path = Path(source)
    docs = read_documents(path)
    if not docs:
        raise SourceError(f"{path}: no Job or Workflow in the file")
    objects = [_parse(doc) for doc in docs]
    jobs = [obj for obj in objects if isinstance(obj, Job)]
    if len(jobs) > 1:
        names = ", ".join(job.metadata.name or "?" for job in jobs)
        raise SourceError(f"{path}: holds {len(jobs)} Jobs ({names}); put one run per file")
    workflows = {obj.metadata.name: obj for obj in objects if isinstance(obj, Workflow)}
    if jobs:
        return _merge(jobs[0], path, workflows, params or {}, state or {})
    if len(workflows) > 1:
        raise SourceError(
            f"{path}: holds {len(workflows)} Workflows and no Job; add a Job naming one in workflowRef"
        )
    return _merge(next(iter(workflows.values())), path, workflows, params or {}, state or {})


def _parse(doc: Document) -> Job | Workflow:
    try:
        return parse_document(doc)
    except pydantic.ValidationError as exc:
        lines = "\n".join(f"  {line}" for line in describe_errors(exc))
        raise SourceError(f"{doc.where}: not a valid {doc.kind}:\n{lines}") from exc


def describe_errors(exc: pydantic.ValidationError) -> list[str]:
    """``path.to.field: problem`` for each error, with the wire (camelCase) names."""
    out = []
    for error in exc.errors():
        loc = field_path(error["loc"])
        out.append(f"{loc or '(document)'}: {error['msg']}")
    return out


def _find_workflow(ref: WorkflowRef, path: Path, here: Mapping[str, Workflow]) -> Workflow:
    if ref.name in here:
        return here[ref.name]
    for sibling in sorted(path.parent.glob("*.y*ml")):
        if sibling == path or sibling.suffix not in (".yaml", ".yml"):
            continue
        try:
            docs = read_documents(sibling)
        except SourceError:
            continue  # an unrelated broken file must not stop this run
        for doc in docs:
            if doc.kind == "Workflow" and doc.name == ref.name:
                try:
                    workflow = Workflow.model_validate(doc.data)
                except pydantic.ValidationError as exc:
                    lines = "\n".join(f"  {line}" for line in describe_errors(exc))
                    raise SourceError(f"{doc.where}: Workflow {ref.name!r} is not valid:\n{lines}") from exc
                return workflow
    raise SourceError(
        f"{path}: spec.workflowRef.name: no Workflow {ref.name!r} in this file or beside it in {path.parent}"
    )


def _merge(
    obj: Job | Workflow,
    path: Path,
    workflows: Mapping[str, Workflow],
    params: Mapping[str, JSON],
    state: Mapping[str, JSON],
) -> Run:
    """The run, checked once more as a whole: params and state from the command
    line count against the same bounds as the file's own."""
    try:
        run = _merged(obj, path, workflows, params, state)
        JobSpec.model_validate(run.job.spec.dump())
    except pydantic.ValidationError as exc:
        lines = "\n".join(f"  spec.{line}" for line in describe_errors(exc))
        raise SourceError(f"{path}: with the params and state given, not a valid run:\n{lines}") from exc
    return run


def _merged(
    obj: Job | Workflow,
    path: Path,
    workflows: Mapping[str, Workflow],
    params: Mapping[str, JSON],
    state: Mapping[str, JSON],
) -> Run:
    if isinstance(obj, Workflow):
        spec = obj.spec
        # A scheduled run gets the schedule's params over the Workflow's.
        schedule_params = spec.schedule.params if spec.schedule else {}
        job_spec = JobSpec(
            steps=list(spec.steps),
            params={**spec.params, **schedule_params, **params},
            initial_state={**spec.initial_state, **state},
            parallelism=spec.parallelism,
            active_deadline_seconds=spec.active_deadline_seconds,
        )
        name = obj.metadata.name or path.stem
        job = Job(metadata={"name": name, "namespace": obj.metadata.namespace}, spec=job_spec)
        return Run(job=job, source=path, workflow=obj.metadata.name or None)
    spec_in = obj.spec
    name = obj.metadata.name or path.stem
    if spec_in.workflow_ref is None:
        job_spec = spec_in.model_copy(
            update={
                "params": {**spec_in.params, **params},
                "initial_state": {**spec_in.initial_state, **state},
            }
        )
        return Run(job=obj.model_copy(update={"spec": job_spec}), source=path)
    workflow = _find_workflow(spec_in.workflow_ref, path, workflows)
    wspec = workflow.spec
    job_spec = spec_in.model_copy(
        update={
            "workflow_ref": None,
            "steps": list(wspec.steps),
            "params": {**wspec.params, **spec_in.params, **params},
            "initial_state": {**wspec.initial_state, **spec_in.initial_state, **state},
            "parallelism": spec_in.parallelism or wspec.parallelism,
            "active_deadline_seconds": spec_in.active_deadline_seconds or wspec.active_deadline_seconds,
        }
    )
    job = obj.model_copy(update={"spec": job_spec})
    if not job.metadata.name:
        job = job.model_copy(update={"metadata": job.metadata.model_copy(update={"name": name})})
    return Run(job=job, source=path, workflow=workflow.metadata.name)
