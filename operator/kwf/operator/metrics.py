"""Prometheus metrics of the operator. Labels stay low-cardinality: every label
value comes from a closed set the operator defines (a phase, a token kind, a
kind of object), never from a run, a step's result or any text a tenant writes,
so no tenant can grow the number of series."""

from __future__ import annotations

from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from kwf.api import JobStatus

REGISTRY = CollectorRegistry(auto_describe=True)

RUNS_FINISHED = Counter("kwf_runs_finished", "Runs that finished, by phase", ["phase"], registry=REGISTRY)
RUNS_ACTIVE = Gauge("kwf_runs_active", "Runs known and not finished", registry=REGISTRY)
STEPS_FINISHED = Counter(
    "kwf_step_attempts_finished", "Step attempts that finished, by result", ["result"], registry=REGISTRY
)
STEPS_LAUNCHED = Counter("kwf_step_attempts_launched", "Child Jobs created", registry=REGISTRY)
STEP_DURATION = Histogram(
    "kwf_step_attempt_duration_seconds",
    "From a step attempt's start to its end",
    ["result"],
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600),
    registry=REGISTRY,
)
SCHEDULE_LATENCY = Histogram(
    "kwf_schedule_latency_seconds",
    "From the event that made a step ready to its child Job being created",
    buckets=(0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
SCHEDULE_DECISION = Histogram(
    "kwf_schedule_decision_seconds",
    "From the event that made a step ready to its launch decided: kwf's own part of"
    " kwf_schedule_latency_seconds, before the API server's answer to the create",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "kwf_reconcile_duration_seconds",
    "One reconcile of a run, API calls included",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
    registry=REGISTRY,
)
STATUS_CONFLICTS = Counter(
    "kwf_status_conflicts", "Status writes refused because the run changed meanwhile", registry=REGISTRY
)
LLM_TOKENS = Counter("kwf_llm_tokens", "LLM tokens used by steps", ["kind"], registry=REGISTRY)
SET_ASIDE = Counter(
    "kwf_objects_set_aside",
    "Objects the operator could not read or plan, or children it did not launch, left alone",
    ["kind"],
    registry=REGISTRY,
)

SetAsideKind = Literal["run", "workflow", "child_job", "pod"]


def count(old: JobStatus, new: JobStatus) -> None:
    """Count what changed between two statuses of a run."""
    if new.phase != old.phase and new.phase.finished:
        RUNS_FINISHED.labels(new.phase.value).inc()
    before = {step.name: step for step in old.steps}
    for step in new.steps:
        prior = before.get(step.name)
        if step.phase.finished and (prior is None or not prior.phase.finished):
            STEPS_FINISHED.labels(step.phase.value).inc()
            if step.started_at and step.finished_at:
                seconds = (step.finished_at - step.started_at).total_seconds()
                STEP_DURATION.labels(step.phase.value).observe(max(seconds, 0.0))
    # Model names come from the step's result: summed over, never a label.
    for kind in ("prompt_tokens", "completion_tokens"):
        grown = sum(getattr(usage, kind) for usage in new.usage.values()) - sum(
            getattr(usage, kind) for usage in old.usage.values()
        )
        if grown > 0:
            LLM_TOKENS.labels(kind.split("_")[0]).inc(grown)


def set_aside(kind: SetAsideKind) -> None:
    SET_ASIDE.labels(kind).inc()


def serve(port: int) -> None:
    """Serve /metrics on ``port`` from a thread of prometheus_client's own."""
    start_http_server(port, registry=REGISTRY)
