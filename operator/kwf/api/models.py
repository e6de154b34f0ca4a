"""Workflow and Job, spec and status, as pydantic v2 models.

Field names are the public API (camelCase on the wire, as Kubernetes does).
What a schema can check is declared here and ends up in the CRD as well:
types, enums, bounds (:mod:`kwf.api.bounds`), patterns, and the rules across
fields (:mod:`kwf.api.rules`), which the API server checks with CEL and every
other reader of a spec with their Python twins. Checks that need the whole
graph (cycles, unknown dependencies, template syntax) live in
:mod:`kwf.engine.graph`; :func:`kwf.engine.validation.problems` runs both.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from kwf.api import bounds as b
from kwf.api.bounds import FreeForm
from kwf.api.rules import NO_TEMPLATE_IN_CODE, VALIDATIONS, Rule

GROUP = "workflow.kwf.dev"
VERSION = "v1alpha1"

#: A step name becomes part of a child Job's name and a label value.
STEP_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MAX_STEPS = 1000

JSON = Any
StepName = Annotated[str, Field(min_length=1, max_length=63, pattern=STEP_NAME_PATTERN)]
ObjectName = Annotated[str, Field(min_length=1, max_length=b.NAME_CHARS, pattern=b.OBJECT_NAME_PATTERN)]
Seconds = Annotated[int, Field(gt=0, le=b.MAX_SECONDS)]
Params = Annotated[dict[str, JSON], Field(max_length=b.MAX_KEYS), FreeForm(b.PARAMS_BYTES)]
InitialState = Annotated[dict[str, JSON], Field(max_length=b.MAX_KEYS), FreeForm(b.INITIAL_STATE_BYTES)]


def _rules_in_schema(schema: dict[str, Any], model: type[BaseModel]) -> None:
    rules: tuple[Rule, ...] = getattr(model, "RULES", ())
    if rules:
        schema[VALIDATIONS] = [rule.wire for rule in rules]


class Model(BaseModel):
    """Spec parts: camelCase aliases, unknown fields rejected, immutable.

    ``RULES`` hold across the model's fields: the CRD carries their CEL, and
    validation checks their Python twins, first broken rule first.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        # JSON has no NaN or infinity, but Python's json module reads them.
        allow_inf_nan=False,
        json_schema_extra=_rules_in_schema,
    )

    RULES: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _rules_hold(self) -> Model:
        for rule in self.RULES:
            rule.check(self)
        return self

    def dump(self) -> dict[str, Any]:
        """The wire form: camelCase, no unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StatusModel(BaseModel):
    """Status parts: camelCase aliases; unknown fields are kept, not rejected,
    so an older operator reading a newer status loses nothing."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --------------------------------------------------------------------- steps


class Backoff(Model):
    """Wait before retry n: ``seconds * factor**(n-1)``, capped by ``maxSeconds``."""

    seconds: float = Field(default=1.0, ge=0, le=b.MAX_SECONDS, description="wait before the first retry")
    # factor ** 100 retries stays a finite float
    factor: float = Field(default=2.0, ge=1, le=100, description="growth of the wait per retry")
    max_seconds: float = Field(default=300.0, gt=0, le=b.MAX_SECONDS, description="the longest wait")


class Retry(Model):
    limit: int = Field(default=0, ge=0, le=100, description="retries after the first attempt")
    backoff: Backoff = Field(default_factory=Backoff)


class SecretKeyRef(Model):
    """A key of a Secret in the run's namespace."""

    # Checked as Kubernetes names: the name becomes a segment of an API path.
    name: ObjectName = Field(description="a Secret in the run's namespace")
    key: str = Field(min_length=1, max_length=b.NAME_CHARS, pattern=b.SECRET_KEY_PATTERN)


class EnvVar(Model):
    """An environment variable of a step's container: a plain value, or a key of
    a Secret (passed as ``secretKeyRef``; its value never enters spec or status)."""

    name: str = Field(min_length=1, max_length=b.NAME_CHARS, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    value: str | None = Field(default=None, max_length=b.ARG_CHARS)
    secret_key_ref: SecretKeyRef | None = None

    RULES = (
        Rule(
            "has(self.value) != has(self.secretKeyRef)",
            "set exactly one of value or secretKeyRef",
            lambda env: (env.value is None) != (env.secret_key_ref is None),
        ),
    )


Quantity = Annotated[str, Field(min_length=1, max_length=b.SHORT_CHARS, pattern=b.QUANTITY_PATTERN)]


class Resources(Model):
    """Requests and limits of a step's container (Kubernetes quantities)."""

    requests: dict[str, Quantity] | None = Field(default=None, max_length=b.MAX_RESOURCES)
    limits: dict[str, Quantity] | None = Field(default=None, max_length=b.MAX_RESOURCES)


class ScriptStep(Model):
    language: Literal["python", "shell"] = "python"
    source: Annotated[str, NO_TEMPLATE_IN_CODE.on_field()] = Field(min_length=1, max_length=b.SOURCE_CHARS)
    image: str | None = Field(
        default=None, min_length=1, max_length=b.IMAGE_CHARS, description="defaults to the runner image"
    )


Arg = Annotated[str, Field(max_length=b.ARG_CHARS)]


class ContainerStep(Model):
    image: str = Field(min_length=1, max_length=b.IMAGE_CHARS)
    command: list[Arg] | None = Field(default=None, max_length=b.MAX_ARGS)
    args: list[Arg] | None = Field(default=None, max_length=b.MAX_ARGS)


class HttpStep(Model):
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: str = Field(min_length=1, max_length=b.URL_CHARS)
    headers: dict[str, Annotated[str, Field(max_length=b.HEADER_CHARS)]] | None = Field(
        default=None, max_length=b.MAX_HEADERS
    )
    body: Annotated[JSON, FreeForm(b.HTTP_BODY_BYTES)] = None
    timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    expected_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=lambda: [200, 201, 202, 203, 204],
        max_length=b.MAX_STATUS_CODES,
        description="response codes that count as success",
    )
    select: str | None = Field(
        default=None,
        max_length=b.SHORT_CHARS,
        description="dotted path into {status, headers, body} to keep, e.g. body.items",
    )
    retries: int = Field(default=2, ge=0, le=10, description="in-step retries of transient failures")


class Message(Model):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=b.TEXT_CHARS)


class LlmStep(Model):
    base_url: str | None = Field(
        default=None, alias="baseURL", max_length=b.URL_CHARS, description="any OpenAI-compatible endpoint"
    )
    model: str = Field(min_length=1, max_length=b.SHORT_CHARS)
    prompt: str | None = Field(default=None, max_length=b.TEXT_CHARS)
    system: str | None = Field(default=None, max_length=b.TEXT_CHARS)
    messages: list[Message] | None = Field(default=None, max_length=b.MAX_MESSAGES)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0, le=b.MAX_SECONDS)
    json_mode: bool = Field(default=False, description="ask for a JSON object and parse it as the output")
    api_key_secret_ref: SecretKeyRef | None = None
    timeout_seconds: float = Field(default=120.0, gt=0, le=3600)

    RULES = (
        Rule(
            "has(self.prompt) != has(self.messages)",
            "set exactly one of prompt or messages",
            lambda llm: (llm.prompt is None) != (llm.messages is None),
        ),
    )


class Executor(enum.StrEnum):
    POD = "pod"
    INLINE = "inline"


STEP_TYPES = ("script", "container", "http", "llm")


class Step(Model):
    name: StepName
    depends_on: list[StepName] = Field(default_factory=list, max_length=MAX_STEPS)
    when: str | None = Field(default=None, max_length=4096, description="CEL over params, state and steps")
    script: ScriptStep | None = None
    container: ContainerStep | None = None
    http: HttpStep | None = None
    llm: LlmStep | None = None
    retry: Retry = Field(default_factory=Retry)
    timeout_seconds: Seconds | None = Field(default=None, description="per attempt")
    save_as: str | None = Field(
        default=None,
        max_length=253,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
        description="store the step's output at state.<saveAs>",
    )
    on_failure: StepName | None = Field(
        default=None,
        description="a step that runs only when this one fails for good; its output stands in for this one's",
    )
    executor: Executor = Executor.POD
    env: list[EnvVar] | None = Field(default=None, max_length=b.MAX_ENV)
    resources: Resources | None = None

    RULES = (
        Rule(
            "[has(self.script), has(self.container), has(self.http), has(self.llm)].filter(x, x).size() == 1",
            "a step has exactly one of script, container, http, llm",
            lambda step: sum(getattr(step, kind) is not None for kind in STEP_TYPES) == 1,
        ),
        Rule(
            "self.executor != 'inline' || has(self.http) || has(self.llm)",
            "executor inline is only for http and llm steps",
            lambda step: step.executor != Executor.INLINE or step.http is not None or step.llm is not None,
        ),
    )

    @property
    def kind(self) -> str:
        """The step's type: script, container, http or llm."""
        for kind in STEP_TYPES:
            if getattr(self, kind) is not None:
                return kind
        raise ValueError(f"step {self.name!r} has no type")


Steps = Annotated[
    list[Step],
    Field(
        max_length=MAX_STEPS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    ),
]


# ----------------------------------------------------------------------- Job


class WorkflowRef(Model):
    name: ObjectName


class Rerun(Model):
    """Ask for failed steps to run again: a new ``id`` means a new request
    (GitOps-friendly; ``kwf retry`` sets it)."""

    id: str = Field(min_length=1, max_length=63)
    step: StepName | None = Field(
        default=None, description="this step and all after it; default: every failed step"
    )


class JobSpec(Model):
    workflow_ref: WorkflowRef | None = None
    steps: Annotated[Steps, Field(min_length=1)] | None = None
    params: Params = Field(default_factory=dict)
    initial_state: InitialState = Field(default_factory=dict)
    parallelism: int | None = Field(default=None, ge=1, le=1000, description="steps running at once")
    active_deadline_seconds: Seconds | None = None
    suspend: bool = False
    cancel: bool = False
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0, le=b.MAX_SECONDS)
    rerun: Rerun | None = None

    RULES = (
        Rule(
            "has(self.workflowRef) != has(self.steps)",
            "set exactly one of workflowRef or steps",
            lambda spec: (spec.workflow_ref is None) != (spec.steps is None),
        ),
    )


class JobPhase(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobPhase.SUCCEEDED, JobPhase.FAILED, JobPhase.CANCELLED)


class StepPhase(enum.StrEnum):
    PENDING = "Pending"
    WAITING = "Waiting"  # between attempts (backoff)
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    RECOVERED = "Recovered"  # failed for good, and its onFailure step succeeded
    CANCELLED = "Cancelled"

    @property
    def finished(self) -> bool:
        return self in _FINISHED_STEP

    @property
    def satisfies_dependents(self) -> bool:
        """Whether steps that depend on this one may run."""
        return self in (StepPhase.SUCCEEDED, StepPhase.SKIPPED, StepPhase.RECOVERED)


_FINISHED_STEP = frozenset(
    {StepPhase.SUCCEEDED, StepPhase.FAILED, StepPhase.SKIPPED, StepPhase.RECOVERED, StepPhase.CANCELLED}
)


class Condition(StatusModel):
    """metav1.Condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    last_transition_time: datetime
    observed_generation: int | None = None


class StepStatus(StatusModel):
    name: str
    phase: StepPhase = StepPhase.PENDING
    attempts: int = Field(default=0, ge=0, description="attempts started, infrastructure retries excluded")
    infra_retries: int = Field(default=0, ge=0, description="attempts lost to the infrastructure")
    last_attempt: int = Field(
        default=0, ge=0, description="the number of the latest launch; numbers are never reused"
    )
    started_at: datetime | None = None
    finished_at: datetime | None = None
    next_attempt_at: datetime | None = None
    message: str | None = Field(default=None, max_length=1024)
    job: str | None = Field(default=None, description="the child batch/v1 Job of the current attempt")
    job_uid: str | None = Field(
        default=None,
        max_length=64,
        description="the uid of that child Job, as created: only the child kwf launched counts",
    )
    output: str | None = Field(default=None, max_length=256, description="a short preview of the output")


class TokenUsage(StatusModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class WorkflowSnapshot(StatusModel):
    """The Workflow a run started from, kept so later edits change only new runs."""

    name: str
    generation: int | None = None
    steps: list[dict[str, JSON]] = Field(
        default_factory=list, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    params: dict[str, JSON] = Field(
        default_factory=dict, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    initial_state: dict[str, JSON] = Field(
        default_factory=dict, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    parallelism: int | None = None
    active_deadline_seconds: int | None = None
    ttl_seconds_after_finished: int | None = None


class JobStatus(StatusModel):
    phase: JobPhase = JobPhase.PENDING
    progress: str = "0/0"
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    steps: list[StepStatus] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    shared_state: dict[str, JSON] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    outputs: dict[str, JSON] = Field(
        default_factory=dict,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="each finished step's output, for templates and `kwf get`",
    )
    usage: dict[str, TokenUsage] = Field(default_factory=dict, description="LLM tokens by model")
    workflow: WorkflowSnapshot | None = None
    added_steps: list[dict[str, JSON]] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="steps that steps returned; they joined the run's graph",
    )
    rerun: str | None = Field(default=None, description="the id of the last rerun request carried out")


class ObjectMeta(StatusModel):
    """The part of metadata kwf reads."""

    name: str = ""
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    creation_timestamp: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Job(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    api_version: Literal["workflow.kwf.dev/v1alpha1"] = "workflow.kwf.dev/v1alpha1"
    kind: Literal["Job"] = "Job"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: JobSpec
    status: JobStatus = Field(default_factory=JobStatus)


# ------------------------------------------------------------------ Workflow


class Schedule(Model):
    cron: str = Field(min_length=1, max_length=256, description="five-field cron, or @hourly/@daily/...")
    time_zone: str = Field(default="UTC", max_length=64)
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = "Allow"
    starting_deadline_seconds: Seconds | None = None
    successful_jobs_history_limit: int = Field(default=3, ge=0, le=1000)
    failed_jobs_history_limit: int = Field(default=1, ge=0, le=1000)
    suspend: bool = False
    params: Params = Field(default_factory=dict)


class WorkflowSpec(Model):
    steps: Steps = Field(min_length=1)
    params: Params = Field(default_factory=dict)
    initial_state: InitialState = Field(default_factory=dict)
    parallelism: int | None = Field(default=None, ge=1, le=1000)
    active_deadline_seconds: Seconds | None = None
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0, le=b.MAX_SECONDS)
    schedule: Schedule | None = None


class WorkflowStatus(StatusModel):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    last_schedule_time: datetime | None = None
    active: list[str] = Field(
        default_factory=list, description="runs started by the schedule and still running"
    )


class Workflow(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    api_version: Literal["workflow.kwf.dev/v1alpha1"] = "workflow.kwf.dev/v1alpha1"
    kind: Literal["Workflow"] = "Workflow"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: WorkflowSpec
    status: WorkflowStatus = Field(default_factory=WorkflowStatus)
