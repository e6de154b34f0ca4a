"""From child Job and pod JSON (shaped as a 1.36 API server returns them) to attempts."""

from __future__ import annotations

import copy
import json
from typing import Any

from kwf.engine.types import AttemptPhase, Limits, Result
from kwf.k8s.index import ChildIndex, RunKey
from kwf.k8s.manifests import LABEL_ATTEMPT, LABEL_JOB, LABEL_JOB_UID, LABEL_STEP, MANAGED_BY
from kwf.k8s.observe import attempt_of
from kwf.steps.framing import frame, log_budget
from kwf.steps.results import report_result

RUN_UID = "5a1f0c9e-0000-4000-8000-000000000001"
JOB_UID = "9d2b7f10-0000-4000-8000-000000000002"
POD_UID = "c0ffee00-0000-4000-8000-000000000003"


def child(*, conditions: list[dict[str, Any]] | None = None, owner_uid: str = RUN_UID) -> dict[str, Any]:
    labels = {
        MANAGED_BY: "kwf",
        LABEL_JOB: "demo",
        LABEL_JOB_UID: RUN_UID,
        LABEL_STEP: "count",
        LABEL_ATTEMPT: "2",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "demo-count-2",
            "namespace": "default",
            "uid": JOB_UID,
            "resourceVersion": "100",
            "creationTimestamp": "2026-03-01T10:00:00Z",
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "workflow.kwf.dev/v1alpha1",
                    "kind": "Job",
                    "name": "demo",
                    "uid": owner_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 30},
        "status": {"startTime": "2026-03-01T10:00:00Z", "active": 1, "conditions": conditions or []},
    }


def pod(state: dict[str, Any] | None = None, *, phase: str = "Running", **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "demo-count-2-x7k2p",
            "namespace": "default",
            "uid": POD_UID,
            "resourceVersion": "101",
            "labels": {LABEL_JOB_UID: RUN_UID, "batch.kubernetes.io/controller-uid": JOB_UID},
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": "demo-count-2",
                    "uid": JOB_UID,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "status": {
            "phase": phase,
            "containerStatuses": [
                {"name": "step", "ready": False, "restartCount": 0, "state": state or {"running": {}}}
            ],
            **status,
        },
    }


def terminated(code: int, message: str = "", reason: str = "Completed") -> dict[str, Any]:
    return {
        "terminated": {
            "exitCode": code,
            "reason": reason,
            "message": message,
            "startedAt": "2026-03-01T10:00:01Z",
            "finishedAt": "2026-03-01T10:00:02Z",
        }
    }


def test_running_pod_is_a_running_attempt() -> None:
    attempt = attempt_of(child(), pod())
    assert attempt is not None
    assert (attempt.step, attempt.number, attempt.phase, attempt.child) == (
        "count",
        2,
        AttemptPhase.RUNNING,
        "demo-count-2",
    )


def test_exit_zero_with_a_result_succeeds_before_the_job_completes() -> None:
    message = json.dumps({"output": 42, "state": {"counter": 3}})
    attempt = attempt_of(child(), pod(terminated(0, message), phase="Succeeded"))
    assert attempt is not None and attempt.phase is AttemptPhase.SUCCEEDED
    assert attempt.result is not None
    assert attempt.result.output == 42 and attempt.result.state == {"counter": 3}
    assert attempt.finished_at is not None and attempt.finished_at.second == 2


def test_non_zero_exit_fails_with_the_steps_message() -> None:
    attempt = attempt_of(child(), pod(terminated(1, json.dumps({"error": "boom: counter missing"}), "Error")))
    assert attempt is not None and attempt.phase is AttemptPhase.FAILED
    assert attempt.message == "boom: counter missing"


def test_out_of_memory_says_so() -> None:
    attempt = attempt_of(child(), pod(terminated(137, "", "OOMKilled")))
    assert attempt is not None and attempt.phase is AttemptPhase.FAILED
    assert attempt.message is not None and "out of memory" in attempt.message


def test_step_timeout_is_the_steps_failure() -> None:
    cond = {
        "type": "Failed",
        "status": "True",
        "reason": "DeadlineExceeded",
        "message": "Job was active longer than specified deadline",
        "lastTransitionTime": "2026-03-01T10:00:30Z",
    }
    attempt = attempt_of(child(conditions=[cond]), pod(terminated(137, "", "Error")))
    assert attempt is not None and attempt.phase is AttemptPhase.FAILED
    assert attempt.message == "timed out after 30s"


def test_evicted_pod_is_lost_to_the_infrastructure() -> None:
    evicted = pod(phase="Failed", reason="Evicted", message="The node was low on resource: memory.")
    evicted["status"]["containerStatuses"][0]["state"] = {"waiting": {}}
    attempt = attempt_of(child(), evicted)
    assert attempt is not None and attempt.phase is AttemptPhase.LOST
    assert attempt.message is not None and "Evicted" in attempt.message


def test_pod_killed_by_deletion_is_lost_not_failed() -> None:
    dying = pod(terminated(143, "", "Error"))
    dying["metadata"]["deletionTimestamp"] = "2026-03-01T10:00:05Z"
    attempt = attempt_of(child(), dying)
    assert attempt is not None and attempt.phase is AttemptPhase.LOST


def test_vanished_pod_is_lost() -> None:
    attempt = attempt_of(child(), None, pod_vanished=True)
    assert attempt is not None and attempt.phase is AttemptPhase.LOST


def test_job_failed_without_any_pod_left_is_lost() -> None:
    cond = {
        "type": "Failed",
        "status": "True",
        "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit",
    }
    attempt = attempt_of(child(conditions=[cond]), None)
    assert attempt is not None and attempt.phase is AttemptPhase.LOST


def test_framed_result_waits_for_the_log_then_succeeds() -> None:
    result = Result(output="x" * 10_000, state={"big": True})
    report = report_result(result, Limits())
    assert report.stdout is not None
    finished = pod(terminated(0, report.message), phase="Succeeded")
    waiting = attempt_of(child(), finished)
    assert waiting is not None and waiting.phase is AttemptPhase.RUNNING
    log = "some step output\n" + report.stdout + "trailing line\n"
    attempt = attempt_of(child(), finished, log=log)
    assert attempt is not None and attempt.phase is AttemptPhase.SUCCEEDED
    assert attempt.result is not None and attempt.result.output == "x" * 10_000


def test_framed_result_missing_from_the_log_fails_clearly() -> None:
    report = report_result(Result(output="y" * 9000), Limits())
    attempt = attempt_of(child(), pod(terminated(0, report.message)), log="no frame here\n" + frame(b"{}"))
    assert attempt is not None and attempt.phase is AttemptPhase.FAILED
    assert attempt.message is not None and "missing" in attempt.message


def test_index_ignores_a_child_claiming_another_runs_uid() -> None:
    index = ChildIndex()
    index.remember_run(RUN_UID, RunKey("default", "demo"))
    forged = child(owner_uid="11111111-2222-4333-8444-555555555555")  # label says RUN_UID, owner does not
    assert index.put_job(forged) is None
    assert index.observe(RUN_UID) == {}


def test_index_joins_pods_with_their_jobs_in_either_order() -> None:
    index = ChildIndex()
    index.remember_run(RUN_UID, RunKey("default", "demo"))
    done = pod(terminated(0, json.dumps({"output": 1})))
    assert index.put_pod(done) == RunKey("default", "demo")  # the pod's event came first
    assert index.put_job(child()) == RunKey("default", "demo")
    (attempt,) = index.observe(RUN_UID)["count"]
    assert attempt.phase is AttemptPhase.SUCCEEDED


def test_index_marks_a_pod_deleted_mid_run_as_lost() -> None:
    index = ChildIndex()
    index.remember_run(RUN_UID, RunKey("default", "demo"))
    index.put_job(child())
    running = pod()
    index.put_pod(running)
    gone = copy.deepcopy(running)
    gone["metadata"]["resourceVersion"] = "102"
    index.put_pod(gone, deleted=True)
    (attempt,) = index.observe(RUN_UID)["count"]
    assert attempt.phase is AttemptPhase.LOST


def test_index_keeps_the_newer_of_two_versions() -> None:
    index = ChildIndex()
    index.remember_run(RUN_UID, RunKey("default", "demo"))
    newer = child()
    newer["metadata"]["resourceVersion"] = "200"
    newer["status"]["conditions"] = [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]
    index.put_job(newer)
    index.put_job(child())  # an older event arriving late changes nothing
    (attempt,) = index.observe(RUN_UID)["count"]
    assert attempt.phase is AttemptPhase.FAILED


def test_index_wakes_a_run_only_when_what_its_plan_reads_changes() -> None:
    index = ChildIndex()
    run = RunKey("default", "demo")
    index.remember_run(RUN_UID, run)
    assert index.put_job(child()) == run  # a new child
    assert index.put_job(child()) is None  # its watch event, after the create's answer
    assert index.put_pod(pod(phase="Pending", state={"waiting": {"reason": "ContainerCreating"}})) is None
    started = pod()
    started["metadata"]["resourceVersion"] = "102"
    assert index.put_pod(started) is None  # still a running attempt
    report = report_result(Result(output="x" * 10_000), Limits())
    framed = pod(terminated(0, report.message))
    framed["metadata"]["resourceVersion"] = "103"
    assert index.put_pod(framed) == run  # its log is to be read now
    index.put_log(JOB_UID, "")
    again = copy.deepcopy(framed)
    again["metadata"]["resourceVersion"] = "104"
    assert index.put_pod(again) is None
    assert index.put_pod(again, deleted=True) is None  # ended already: the deletion changes nothing
    assert index.delete_job(child()) == run


def test_a_framed_result_over_the_operators_cap_fails_whatever_the_pods_env_allowed() -> None:
    # The step raised its own cap (KWF_RESULT_BYTES in its env) and framed 300 KiB.
    pods_limits = Limits(result_bytes=1024 * 1024)
    report = report_result(Result(output="z" * 300 * 1024), pods_limits)
    assert report.stdout is not None
    finished = pod(terminated(0, report.message), phase="Succeeded")
    cap = Limits().result_bytes
    # Failed at once, without its log: the operator never reads more than its cap.
    index = ChildIndex(result_cap=cap)
    index.remember_run(RUN_UID, RunKey("default", "demo"))
    index.put_job(child())
    index.put_pod(finished)
    assert index.logs_wanted(RUN_UID) == []
    (attempt,) = index.observe(RUN_UID)["count"]
    assert attempt.phase is AttemptPhase.FAILED
    assert attempt.message is not None
    assert f"{json.loads(report.message)['bytes']} bytes" in attempt.message
    assert f"cap of {cap} bytes" in attempt.message
    # Even with the whole log at hand, the cap holds.
    read = attempt_of(child(), finished, log=report.stdout, result_cap=cap)
    assert read is not None and read.phase is AttemptPhase.FAILED


def test_a_framed_result_within_the_cap_asks_for_only_its_frame_of_the_log() -> None:
    report = report_result(Result(output="w" * 10_000), Limits())
    index = ChildIndex(result_cap=Limits().result_bytes)
    index.remember_run(RUN_UID, RunKey("default", "demo"))
    index.put_job(child())
    index.put_pod(pod(terminated(0, report.message), phase="Succeeded"))
    ((uid, namespace, name, framed),) = index.logs_wanted(RUN_UID)
    assert (uid, namespace, name) == (JOB_UID, "default", "demo-count-2-x7k2p")
    lines, limit = log_budget(framed.bytes)
    assert report.stdout is not None
    frame_lines = report.stdout.strip("\n").splitlines()
    assert len(frame_lines) < lines <= len(frame_lines) + 3
    assert len(report.stdout.encode()) < limit <= len(report.stdout.encode()) + 5000
    # What the log call returns under that budget still holds the frame.
    log = "chatter\n" * 1000 + report.stdout
    tail = "".join(log.splitlines(keepends=True)[-lines:]).encode()[:limit].decode()
    attempt = attempt_of(
        child(), pod(terminated(0, report.message)), log=tail, result_cap=Limits().result_bytes
    )
    assert attempt is not None and attempt.phase is AttemptPhase.SUCCEEDED


def test_a_pod_in_another_namespace_never_joins_a_child() -> None:
    index = ChildIndex()
    index.remember_run(RUN_UID, RunKey("default", "demo"))
    index.put_job(child())
    elsewhere = pod(terminated(0, json.dumps({"output": "forged"})), phase="Succeeded")
    elsewhere["metadata"]["namespace"] = "other"
    assert index.put_pod(elsewhere) is None
    (attempt,) = index.observe(RUN_UID)["count"]
    assert attempt.phase is AttemptPhase.RUNNING


def test_observe_sees_only_the_children_it_is_told_are_the_runs() -> None:
    index = ChildIndex()
    index.remember_run(RUN_UID, RunKey("default", "demo"))
    index.put_job(child())
    assert index.observe(RUN_UID, accepted=frozenset()) == {}
    assert list(index.observe(RUN_UID, accepted={JOB_UID})) == ["count"]
