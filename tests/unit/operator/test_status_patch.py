"""The status patch: an RFC 7386 diff, so keys removed from shared state are removed."""

from __future__ import annotations

from datetime import UTC, datetime

import pydantic
import pytest

from kwf.api import Job, JobPhase, JobStatus, StepPhase, StepStatus
from kwf.engine.state import merge_patch
from kwf.k8s.api import ApiError
from kwf.operator.status import describe, merge_diff, refused, refused_status, with_children


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({}, {"phase": "Running"}),
        ({"sharedState": {"a": 1, "b": {"c": 2}}}, {"sharedState": {"b": {"d": 3}}}),
        ({"steps": [{"name": "a"}]}, {"steps": [{"name": "a"}, {"name": "b"}]}),
        ({"sharedState": {"x": [1, 2]}}, {"sharedState": {"x": {"y": 1}}}),
        ({"sharedState": {"x": {"y": 1}}}, {"sharedState": {"x": 3}}),
        ({"phase": "Running", "progress": "1/2"}, {"phase": "Running", "progress": "1/2"}),
    ],
)
def test_the_diff_applied_as_a_merge_patch_gives_the_new_status(old: dict, new: dict) -> None:  # type: ignore[type-arg]
    diff = merge_diff(old, new)
    assert merge_patch(old, diff or {}) == new
    assert (diff is None) == (old == new)


def test_removed_state_keys_become_nulls() -> None:
    assert merge_diff({"sharedState": {"a": 1, "b": 2}}, {"sharedState": {"b": 2}}) == {
        "sharedState": {"a": None}
    }


def test_validation_errors_name_the_field_in_wire_names() -> None:
    body = {"metadata": {"name": "x"}, "spec": {"steps": [{"name": "Bad_Name", "script": {"source": "x"}}]}}
    with pytest.raises(pydantic.ValidationError) as caught:
        Job.model_validate(body)
    message = describe(caught.value)
    assert message.startswith("spec.steps[0].name:")


def test_the_launch_write_records_each_child_jobs_uid() -> None:
    status = JobStatus(
        steps=[
            StepStatus(name="a", phase=StepPhase.RUNNING, last_attempt=1),
            StepStatus(name="b", phase=StepPhase.SUCCEEDED, job="run-b-1", job_uid="uid-b"),
            StepStatus(name="c", phase=StepPhase.PENDING),
        ]
    )
    recorded = with_children(status, {"a": "run-a-1"}, {"run-a-1": "uid-a"})
    by_name = {entry.name: entry for entry in recorded.steps}
    assert (by_name["a"].job, by_name["a"].job_uid) == ("run-a-1", "uid-a")
    assert (by_name["b"].job, by_name["b"].job_uid) == ("run-b-1", "uid-b")  # collected child: kept
    assert (by_name["c"].job, by_name["c"].job_uid) == (None, None)
    assert recorded.dump()["steps"][0]["jobUid"] == "uid-a"


@pytest.mark.parametrize(
    ("status", "reason", "message", "final"),
    [
        (422, "Invalid", "status.sharedState: Too long: must have at most 262144 bytes", True),
        (413, "RequestEntityTooLarge", "the request is too large", True),
        (500, "InternalError", "etcdserver: request is too large", True),
        (500, "InternalError", "etcdserver: leader changed", False),
        (429, "TooManyRequests", "slow down", False),
    ],
)
def test_a_status_the_api_server_refuses_for_its_content_fails_the_run_once(
    status: int, reason: str, message: str, final: bool
) -> None:
    error = ApiError(status, reason, message)
    assert refused(error) is final
    old = JobStatus(phase=JobPhase.RUNNING, shared_state={"kept": True}, steps=[StepStatus(name="a")])
    patch = refused_status(old, error, datetime(2030, 1, 1, tzinfo=UTC), 3)
    assert set(patch) == {"phase", "message", "finishedAt", "conditions"}  # what was written stays
    assert patch["phase"] == "Failed"
    assert patch["message"].startswith(f"the run's status could not be written ({status} {reason})")
    assert len(patch["message"]) < 400
    stalled = next(c for c in patch["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and stalled["observedGeneration"] == 3
