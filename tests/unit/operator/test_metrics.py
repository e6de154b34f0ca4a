"""Metric labels come from closed sets: nothing a step answers or a tenant
writes becomes a label value, so no run can grow the number of series."""

from __future__ import annotations

from kwf.api import JobPhase, JobStatus, StepPhase, StepStatus, TokenUsage
from kwf.operator import metrics


def series() -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in metrics.REGISTRY.collect()
        for sample in family.samples
    }


def test_model_names_from_step_results_never_become_label_values() -> None:
    before = series()
    used = {f"model-{i}-{'x' * 40}": TokenUsage(prompt_tokens=i + 1, completion_tokens=1) for i in range(200)}
    metrics.count(JobStatus(), JobStatus(usage=used))
    added = series() - before
    assert len(added) <= 4  # the total and created samples of prompt and completion
    assert all(name not in str(added) for name in used)
    prompt = next(
        sample.value
        for family in metrics.REGISTRY.collect()
        for sample in family.samples
        if sample.name == "kwf_llm_tokens_total" and sample.labels == {"kind": "prompt"}
    )
    assert prompt >= sum(range(1, 201))  # still counted, as one series


def test_every_label_value_is_a_phase_or_a_kind() -> None:
    old = JobStatus(phase=JobPhase.RUNNING, steps=[StepStatus(name="a-step-name", phase=StepPhase.RUNNING)])
    new = JobStatus(phase=JobPhase.FAILED, steps=[StepStatus(name="a-step-name", phase=StepPhase.FAILED)])
    metrics.count(old, new)
    allowed = {p.value for p in JobPhase} | {p.value for p in StepPhase} | {"prompt", "completion"}
    allowed |= {"run", "workflow", "child_job", "pod"}
    for _, labels in series():
        for key, value in labels:
            if key not in ("le", "quantile"):
                assert value in allowed, (key, value)
