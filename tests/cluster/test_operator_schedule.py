"""Workflows' schedules in the operator: ticked on Workflow events, on their
own timer, and when a run they started finishes.

What is due never depends on the wall clock's minute: either the Workflow's
``lastScheduleTime`` is set so that a daily time is already missed (the real
operator starts it at once), or the schedules run in this process with a
clock the test sets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from kwf.k8s.api import KWF_JOBS, WORKFLOWS, Client
from kwf.operator.schedules import Schedules
from kwf.schedule import Scheduler, Tick, run_name
from kwf.schedule.cron import parse_time
from kwf.schedule.scheduler import ANNOTATION_SCHEDULED_AT, CONDITION, LABEL_WORKFLOW, STALLED
from tests.support.operator_process import OperatorProcess
from tests.support.runs import wait_for

JSON = Any
STEPS = [{"name": "hello", "script": {"language": "shell", "source": "echo hi"}}]


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def create_workflow(api: Client, namespace: str, name: str, **schedule: JSON) -> dict[str, JSON]:
    body = {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"steps": STEPS, "schedule": schedule},
    }
    return await api.create(WORKFLOWS, body, namespace)


async def set_last_schedule(api: Client, namespace: str, name: str, when: datetime) -> dict[str, JSON]:
    status = {"lastScheduleTime": iso(when)}
    return await api.patch(WORKFLOWS, name, {"status": status}, namespace, subresource="status")


def scheduled(workflow: Mapping[str, JSON]) -> dict[str, JSON]:
    for item in (workflow.get("status") or {}).get("conditions") or ():
        if item.get("type") == CONDITION:
            return dict(item)
    return {}


async def runs_of(api: Client, namespace: str, workflow: str) -> list[dict[str, JSON]]:
    listing = await api.list(KWF_JOBS, namespace, label_selector=f"{LABEL_WORKFLOW}={workflow}")
    return list(listing["items"])


async def test_the_operator_registers_a_schedule_and_starts_a_missed_run(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    created = await create_workflow(api, namespace, "daily", cron="0 3 * * *")
    registered = await wait_for(
        lambda: api.get(WORKFLOWS, "daily", namespace),
        lambda wf: scheduled(wf).get("reason") == "Waiting",
        what="the schedule registered",
    )
    assert scheduled(registered)["message"].startswith("next run at ")
    assert await runs_of(api, namespace, "daily") == []

    # As if the last run was two days ago: the latest 03:00 was missed and is
    # started now, once, however many events the operator sees meanwhile.
    last = datetime.now(UTC) - timedelta(days=2)
    await set_last_schedule(api, namespace, "daily", last)
    [run] = await wait_for(
        lambda: runs_of(api, namespace, "daily"), lambda items: len(items) == 1, what="the missed run"
    )
    at = parse_time(run["metadata"]["annotations"][ANNOTATION_SCHEDULED_AT])
    assert last < at <= datetime.now(UTC) and (at.hour, at.minute) == (3, 0)
    assert run["metadata"]["name"] == run_name("daily", at)
    [owner] = run["metadata"]["ownerReferences"]
    assert owner["uid"] == created["metadata"]["uid"]
    # The operator runs it like any run of the Workflow.
    started = await wait_for(
        lambda: api.get(KWF_JOBS, run["metadata"]["name"], namespace),
        lambda r: ((r.get("status") or {}).get("workflow") or {}).get("name") == "daily",
        what="the scheduled run started",
    )
    assert [s["name"] for s in started["status"]["workflow"]["steps"]] == ["hello"]
    workflow = await wait_for(
        lambda: api.get(WORKFLOWS, "daily", namespace),
        lambda wf: (wf.get("status") or {}).get("lastScheduleTime") == iso(at),
        what="lastScheduleTime recorded",
    )
    assert scheduled(workflow)["status"] == "True"
    assert len(await runs_of(api, namespace, "daily")) == 1


class Recording(Scheduler):
    """The real scheduler, keeping what each tick did."""

    def __init__(self, api: Client, clock: Clock) -> None:
        super().__init__(api, clock=clock)
        self.ticks: list[Tick] = []

    async def tick(self, workflow: Mapping[str, JSON], now: datetime | None = None) -> Tick:
        result = await super().tick(workflow, now)
        self.ticks.append(result)
        return result


class Clock:
    """The wall clock moved by a fixed offset, or stopped at a set moment."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset
        self.fixed: datetime | None = None

    def __call__(self) -> datetime:
        return self.fixed or datetime.now(UTC) + self.offset


async def test_the_next_due_time_is_a_timer_of_the_queue(api: Client, namespace: str) -> None:
    # The clock reads 50 s past a minute: the next run is due 10 s from now.
    real = datetime.now(UTC)
    target = real.replace(second=50, microsecond=0) + timedelta(minutes=30)
    clock = Clock(target - real)
    await create_workflow(api, namespace, "minutely", cron="* * * * *")
    boundary = target.replace(second=0)
    body = await set_last_schedule(api, namespace, "minutely", boundary)
    scheduler = Recording(api, clock)
    schedules = Schedules(scheduler)
    try:
        schedules.workflow_changed(body)  # the only event it is given
        [run] = await wait_for(
            lambda: runs_of(api, namespace, "minutely"),
            lambda items: len(items) == 1,
            within=60,
            what="the run started by the timer",
        )
        await schedules.queue.idle()  # that tick has finished its status write
    finally:
        await schedules.close()
    first, *later = scheduler.ticks
    assert first.created is None and first.delay is not None and 0 < first.delay <= 60
    assert [tick.created for tick in later if tick.created] == [run["metadata"]["name"]]
    due = parse_time(run["metadata"]["annotations"][ANNOTATION_SCHEDULED_AT])
    assert due == boundary + timedelta(minutes=1)


async def test_a_finished_run_lets_a_forbidden_one_start(api: Client, namespace: str) -> None:
    t0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
    clock = Clock()
    clock.fixed = t0 + timedelta(minutes=90)  # 10:30: the 10:00 run is due, 11:00 is 30 min away
    await create_workflow(api, namespace, "hourly", cron="0 * * * *", concurrencyPolicy="Forbid")
    body = await set_last_schedule(api, namespace, "hourly", t0)
    schedules = Schedules(Recording(api, clock))
    try:
        schedules.workflow_changed(body)
        [first] = await wait_for(
            lambda: runs_of(api, namespace, "hourly"), lambda items: len(items) == 1, what="the 10:00 run"
        )
        # 11:30: the 11:00 run is due but the 10:00 one still runs.
        clock.fixed = t0 + timedelta(minutes=150)
        schedules.workflow_changed(await api.get(WORKFLOWS, "hourly", namespace))
        await wait_for(
            lambda: api.get(WORKFLOWS, "hourly", namespace),
            lambda wf: scheduled(wf).get("reason") == "RunActive",
            what="the 11:00 run held back",
        )
        assert len(await runs_of(api, namespace, "hourly")) == 1
        # The 10:00 run finishes: that event alone starts the 11:00 one (the
        # next timer is half an hour away).
        status = {
            "phase": "Succeeded",
            "startedAt": iso(t0 + timedelta(minutes=61)),
            "finishedAt": iso(t0 + timedelta(minutes=140)),
        }
        name = first["metadata"]["name"]
        done = await api.patch(KWF_JOBS, name, {"status": status}, namespace, subresource="status")
        schedules.run_changed(done)
        runs = await wait_for(
            lambda: runs_of(api, namespace, "hourly"), lambda items: len(items) == 2, what="the 11:00 run"
        )
    finally:
        await schedules.close()
    assert sorted(r["metadata"]["name"] for r in runs) == sorted(
        [run_name("hourly", t0 + timedelta(minutes=60)), run_name("hourly", t0 + timedelta(minutes=120))]
    )


def stalled(workflow: Mapping[str, JSON]) -> dict[str, JSON]:
    for item in (workflow.get("status") or {}).get("conditions") or ():
        if item.get("type") == STALLED:
            return dict(item)
    return {}


async def test_a_cron_that_never_fires_stalls_the_workflow_once(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    await create_workflow(api, namespace, "feb30", cron="0 0 30 2 *")
    marked = await wait_for(
        lambda: api.get(WORKFLOWS, "feb30", namespace),
        lambda wf: stalled(wf).get("reason") == "InvalidSchedule",
        what="the Workflow marked Stalled",
    )
    assert stalled(marked)["message"].startswith("spec.schedule.cron: '0 0 30 2 *' never fires")
    # Longer than the work queue's retry delay (5 s): nothing ticks again,
    # so nothing is written again and nothing fails in the log.
    await asyncio.sleep(7)
    still = await api.get(WORKFLOWS, "feb30", namespace)
    assert still["metadata"]["resourceVersion"] == marked["metadata"]["resourceVersion"]
    assert "feb30" not in "\n".join(line for line in operator.log().splitlines() if "failed" in line)
    assert await runs_of(api, namespace, "feb30") == []


class Counting(Scheduler):
    """The real scheduler, counting every tick begun (a failing one too)."""

    def __init__(self, api: Client) -> None:
        super().__init__(api)
        self.begun = 0

    async def tick(self, workflow: Mapping[str, JSON], now: datetime | None = None) -> Tick:
        self.begun += 1
        return await super().tick(workflow, now)


async def test_a_cron_that_never_fires_is_ticked_once_and_never_requeued(api: Client, namespace: str) -> None:
    body = await create_workflow(api, namespace, "feb30-ticks", cron="0 0 30 2 *")
    scheduler = Counting(api)
    schedules = Schedules(scheduler)
    try:
        schedules.workflow_changed(body)
        await asyncio.sleep(7)
        await schedules.queue.idle()
    finally:
        await schedules.close()
    assert scheduler.begun == 1
    assert stalled(await api.get(WORKFLOWS, "feb30-ticks", namespace))["status"] == "True"
