"""Only the children kwf launched count: a Job that merely carries a run's labels
and ownerReference is never taken for one of its attempts."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kwf.api import JobStatus, Step, StepPhase, StepStatus
from kwf.engine.types import Inputs, Launch
from kwf.k8s.index import RunKey
from kwf.k8s.manifests import Owner, PodOptions, child_job, is_launch
from kwf.operator.children import Children

RUN = RunKey("team", "digest")
OWNER = Owner(name="digest", namespace="team", uid="run-uid")


def launch(step: str = "fetch", number: int = 1) -> Launch:
    spec = Step.model_validate({"name": step, "script": {"source": "print(1)"}})
    return Launch(
        step=spec, number=number, inputs=Inputs(job="digest", namespace="team", params={}, state={})
    )


def created(step: str = "fetch", number: int = 1, uid: str = "child-uid") -> dict[str, Any]:
    """A child Job as the API server returns it: kwf's manifest, with a uid and defaults."""
    job = child_job(launch(step, number), OWNER, PodOptions())
    job["metadata"]["uid"] = uid
    job["spec"]["template"]["metadata"]["labels"]["batch.kubernetes.io/job-name"] = job["metadata"]["name"]
    job["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    job["spec"]["completions"] = 1
    return job


def running(step: str, job: str, uid: str | None, attempt: int = 1) -> StepStatus:
    return StepStatus(
        name=step, phase=StepPhase.RUNNING, attempts=attempt, last_attempt=attempt, job=job, job_uid=uid
    )


def test_a_child_this_operator_launched_counts() -> None:
    children = Children()
    children.launched(OWNER.uid, "child-uid")
    verdict = children.judge(RUN, OWNER.uid, JobStatus(), {"child-uid": created()})
    assert verdict.accepted == {"child-uid"} and verdict.names == {"digest-fetch-1": "child-uid"}


def test_a_child_the_status_recorded_counts_after_a_restart() -> None:
    status = JobStatus(steps=[running("fetch", "digest-fetch-1", "child-uid")])
    verdict = Children().judge(RUN, OWNER.uid, status, {"child-uid": created()})
    assert verdict.accepted == {"child-uid"}


FORGERIES = {
    "a step that never started": (JobStatus(), created("fetch", 1, "forged")),
    "the next attempt of a running step": (
        JobStatus(steps=[running("fetch", "digest-fetch-1", "child-uid")]),
        created("fetch", 2, "forged"),
    ),
    "a namesake of a recorded child": (
        JobStatus(steps=[running("fetch", "digest-fetch-1", "child-uid")]),
        created("fetch", 1, "forged"),
    ),
}


@pytest.mark.parametrize("case", FORGERIES)
def test_a_job_with_the_runs_labels_and_owner_that_kwf_did_not_launch_is_foreign(case: str) -> None:
    status, forged = FORGERIES[case]
    verdict = Children().judge(RUN, OWNER.uid, status, {"forged": forged})
    assert verdict.accepted == frozenset()
    assert "kwf did not launch it" in verdict.foreign["forged"]


def test_a_child_elsewhere_or_under_another_name_is_foreign_even_if_launched() -> None:
    children = Children()
    children.launched(OWNER.uid, "a")
    children.launched(OWNER.uid, "b")
    elsewhere = created(uid="a")
    elsewhere["metadata"]["namespace"] = "other"
    renamed = created(uid="b")
    renamed["metadata"]["name"] = "digest-fetch-1-x"
    verdict = children.judge(RUN, OWNER.uid, JobStatus(), {"a": elsewhere, "b": renamed})
    assert verdict.accepted == frozenset()
    assert "namespace other" in verdict.foreign["a"]
    assert "name" in verdict.foreign["b"]


def test_a_job_found_under_an_attempts_name_is_adopted_only_if_it_is_that_launch() -> None:
    manifest = child_job(launch(), OWNER, PodOptions())
    assert is_launch(created(), manifest)
    other_image = created()
    other_image["spec"]["template"]["spec"]["containers"][0]["image"] = "evil.example/steal:latest"
    other_command = created()
    other_command["spec"]["template"]["spec"]["containers"][0]["command"] = ["sh", "-c", "echo forged"]
    extra_container = created()
    containers = extra_container["spec"]["template"]["spec"]["containers"]
    containers.append(copy.deepcopy(containers[0]) | {"name": "sidecar"})
    other_owner = created()
    other_owner["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    for forged in (other_image, other_command, extra_container, other_owner):
        assert not is_launch(forged, manifest)
