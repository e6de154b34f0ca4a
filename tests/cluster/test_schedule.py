"""The Scheduler against the real API server, driven by an injected clock.

Every tick is given its ``now``; the Workflow's ``lastScheduleTime`` is set to
a fixed moment first, so what is due never depends on the real clock. Runs
are finished by writing their status (no operator runs here), with finish
times before the tick's ``now`` so a tick's history pruning is decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kwf.k8s.api import KWF_JOBS, WORKFLOWS, Client
from kwf.schedule import Reason, Scheduler, run_name
from kwf.schedule.scheduler import ANNOTATION_SCHEDULED_AT, CONDITION, LABEL_WORKFLOW, STALLED

JSON = Any
T0 = datetime(2030, 1, 7, 10, 0, tzinfo=UTC)
STEPS = [{"name": "hello", "script": {"language": "shell", "source": "echo hi"}}]


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def scheduled_workflow(api: Client, namespace: str, name: str, **schedule: JSON) -> dict[str, JSON]:
    """A Workflow with a schedule whose last run was at T0."""
    body = {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"steps": STEPS, "schedule": {"cron": "*/5 * * * *", **schedule}},
    }
    await api.create(WORKFLOWS, body, namespace)
    return await api.patch(
        WORKFLOWS, name, {"status": {"lastScheduleTime": iso(T0)}}, namespace, subresource="status"
    )


async def workflow(api: Client, namespace: str, name: str) -> dict[str, JSON]:
    return await api.get(WORKFLOWS, name, namespace)


async def run_names(api: Client, namespace: str) -> list[str]:
    listing = await api.list(KWF_JOBS, namespace)
    return sorted(item["metadata"]["name"] for item in listing["items"])


async def finish(api: Client, namespace: str, name: str, phase: str, when: datetime) -> None:
    status = {"phase": phase, "startedAt": iso(when - timedelta(seconds=30)), "finishedAt": iso(when)}
    await api.patch(KWF_JOBS, name, {"status": status}, namespace, subresource="status")


def condition(obj: Mapping[str, JSON]) -> dict[str, JSON]:
    found = [c for c in obj["status"].get("conditions") or [] if c["type"] == CONDITION]
    assert len(found) == 1, obj["status"]
    return dict(found[0])


async def test_a_due_run_is_created_once_owned_and_recorded(api: Client, namespace: str) -> None:
    wf = await scheduled_workflow(api, namespace, "digest", params={"repo": "nolar/kopf"})
    scheduler = Scheduler(api, clock=lambda: at(3))

    early = await scheduler.tick(wf)
    assert early.decision is not None and early.decision.reason is Reason.NOT_DUE
    assert early.created is None and early.delay == pytest.approx(120.0)
    assert await run_names(api, namespace) == []

    due = await scheduler.tick(await workflow(api, namespace, "digest"), now=at(5) + timedelta(seconds=7))
    name = run_name("digest", at(5))
    assert due.created == name
    assert due.delay == pytest.approx(293.0)
    run = await api.get(KWF_JOBS, name, namespace)
    assert run["spec"]["workflowRef"] == {"name": "digest"}
    assert run["spec"]["params"] == {"repo": "nolar/kopf"}
    [owner] = run["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Workflow", "digest", wf["metadata"]["uid"])
    assert owner["controller"] is True
    assert run["metadata"]["labels"][LABEL_WORKFLOW] == "digest"
    assert run["metadata"]["annotations"][ANNOTATION_SCHEDULED_AT] == iso(at(5))

    status = (await workflow(api, namespace, "digest"))["status"]
    assert status["lastScheduleTime"] == iso(at(5))
    assert status["active"] == [name]
    assert condition({"status": status})["reason"] == Reason.CREATED.value

    # The same slot again, from the fresh object or from the stale one an
    # operator restart might hold: the run exists by name, nothing doubles.
    again = await scheduler.tick(await workflow(api, namespace, "digest"), now=at(6))
    assert again.decision is not None and again.decision.reason is Reason.NOT_DUE
    stale = await scheduler.tick(wf, now=at(6))
    assert stale.decision is not None and stale.decision.reason is Reason.ALREADY_CREATED
    assert stale.created is None
    assert await run_names(api, namespace) == [name]
    assert (await workflow(api, namespace, "digest"))["status"]["lastScheduleTime"] == iso(at(5))


async def test_forbid_waits_for_the_active_run_then_starts_the_missed_one(
    api: Client, namespace: str
) -> None:
    await scheduled_workflow(api, namespace, "nightly", concurrencyPolicy="Forbid")
    scheduler = Scheduler(api)
    first = await scheduler.tick(await workflow(api, namespace, "nightly"), now=at(5))
    assert first.created == run_name("nightly", at(5))

    blocked = await scheduler.tick(await workflow(api, namespace, "nightly"), now=at(10))
    assert blocked.decision is not None and blocked.decision.reason is Reason.FORBIDDEN
    assert blocked.created is None
    assert condition(await workflow(api, namespace, "nightly"))["status"] == "True"

    await finish(api, namespace, run_name("nightly", at(5)), "Succeeded", at(10.5))
    resumed = await scheduler.tick(await workflow(api, namespace, "nightly"), now=at(11))
    assert resumed.created == run_name("nightly", at(10))
    assert resumed.active == (run_name("nightly", at(10)),)


async def test_replace_deletes_the_active_run(api: Client, namespace: str) -> None:
    await scheduled_workflow(api, namespace, "sync", concurrencyPolicy="Replace")
    scheduler = Scheduler(api)
    await scheduler.tick(await workflow(api, namespace, "sync"), now=at(5))
    tick = await scheduler.tick(await workflow(api, namespace, "sync"), now=at(10))
    assert tick.deleted == (run_name("sync", at(5)),)
    assert tick.created == run_name("sync", at(10))
    # Deletion is immediate for a run without finalizers.
    assert await run_names(api, namespace) == [run_name("sync", at(10))]
    assert (await workflow(api, namespace, "sync"))["status"]["active"] == [run_name("sync", at(10))]


async def test_history_keeps_the_newest_runs_of_each_outcome(api: Client, namespace: str) -> None:
    await scheduled_workflow(api, namespace, "report", successfulJobsHistoryLimit=1, failedJobsHistoryLimit=1)
    scheduler = Scheduler(api)
    deleted: list[tuple[str, ...]] = []
    for slot, outcome in enumerate(["Succeeded", "Failed", "Succeeded", "Failed", None], start=1):
        tick = await scheduler.tick(await workflow(api, namespace, "report"), now=at(5 * slot))
        assert tick.created == run_name("report", at(5 * slot))
        # The run created in this tick is active: never pruned with it.
        assert tick.active == (tick.created,)
        deleted.append(tick.deleted)
        if outcome:
            await finish(api, namespace, tick.created, outcome, at(5 * slot + 1))
    # At 20 min the second success (15) displaces the first (5); at 25 min the
    # second failure (20) displaces the first (10).
    assert deleted == [(), (), (), (run_name("report", at(5)),), (run_name("report", at(10)),)]
    assert await run_names(api, namespace) == sorted(
        [run_name("report", at(15)), run_name("report", at(20)), run_name("report", at(25))]
    )


async def test_pruning_waits_for_runs_that_finish_after_now(api: Client, namespace: str) -> None:
    await scheduled_workflow(api, namespace, "late", successfulJobsHistoryLimit=0)
    scheduler = Scheduler(api)
    tick = await scheduler.tick(await workflow(api, namespace, "late"), now=at(5))
    assert tick.created is not None
    await finish(api, namespace, tick.created, "Succeeded", at(7))
    early = await scheduler.tick(await workflow(api, namespace, "late"), now=at(6))
    assert early.deleted == ()
    later = await scheduler.tick(await workflow(api, namespace, "late"), now=at(8))
    assert later.deleted == (tick.created,)


async def test_runs_of_a_namesake_or_a_forged_label_are_not_the_schedules(
    api: Client, namespace: str
) -> None:
    await scheduled_workflow(api, namespace, "owned", successfulJobsHistoryLimit=0)
    forged = {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": "Job",
        "metadata": {"name": "owned-forged", "labels": {LABEL_WORKFLOW: "owned"}},
        "spec": {"workflowRef": {"name": "owned"}},
    }
    await api.create(KWF_JOBS, forged, namespace)
    await finish(api, namespace, "owned-forged", "Succeeded", at(1))
    tick = await Scheduler(api).tick(await workflow(api, namespace, "owned"), now=at(5))
    assert "owned-forged" not in tick.deleted
    assert "owned-forged" in await run_names(api, namespace)


async def test_an_invalid_schedule_is_reported_not_run(api: Client, namespace: str) -> None:
    await scheduled_workflow(api, namespace, "broken", timeZone="Mars/Olympus")
    tick = await Scheduler(api).tick(await workflow(api, namespace, "broken"), now=at(30))
    assert tick.created is None and tick.delay is None
    found = condition(await workflow(api, namespace, "broken"))
    assert (found["status"], found["reason"]) == ("False", Reason.INVALID.value)
    assert "spec.schedule.timeZone" in found["message"]
    assert await run_names(api, namespace) == []


async def test_other_conditions_survive_the_status_write(api: Client, namespace: str) -> None:
    await scheduled_workflow(api, namespace, "kept")
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "Valid",
        "message": "",
        "lastTransitionTime": iso(T0),
    }
    await api.patch(WORKFLOWS, "kept", {"status": {"conditions": [ready]}}, namespace, subresource="status")
    await Scheduler(api).tick(await workflow(api, namespace, "kept"), now=at(5))
    types = [c["type"] for c in (await workflow(api, namespace, "kept"))["status"]["conditions"]]
    assert sorted(types) == ["Ready", CONDITION]


async def test_a_cron_that_never_fires_is_reported_once(api: Client, namespace: str) -> None:
    """The 30th of February passes every field's range check; the schedule is
    marked Stalled naming spec.schedule.cron, with no next time to wait for,
    and a second pass writes nothing."""
    await scheduled_workflow(api, namespace, "feb30", cron="0 0 30 2 *")
    first = await Scheduler(api).tick(await workflow(api, namespace, "feb30"), now=at(30))
    assert first.created is None and first.delay is None
    written = await workflow(api, namespace, "feb30")
    stalled = [c for c in written["status"]["conditions"] if c["type"] == STALLED]
    assert [(c["status"], c["reason"]) for c in stalled] == [("True", Reason.INVALID.value)]
    assert stalled[0]["message"].startswith("spec.schedule.cron: '0 0 30 2 *' never fires")
    assert condition(written)["status"] == "False"

    again = await Scheduler(api).tick(written, now=at(90))
    assert again.delay is None
    after = await workflow(api, namespace, "feb30")
    assert after["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"]
    assert await run_names(api, namespace) == []
