"""The pure schedule decisions: table tests over policies, zones, deadlines and history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kwf.api import JobPhase, Schedule
from kwf.schedule import Decision, Reason, ScheduledRun, ScheduleError, decide, next_due, prune, run_name
from kwf.schedule.cron import check, latest_due

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)  # a Monday


def at(minutes: float, base: datetime = T0) -> datetime:
    return base + timedelta(minutes=minutes)


def schedule(**fields: Any) -> Schedule:
    return Schedule.model_validate({"cron": "*/10 * * * *", **fields})


def running(name: str) -> ScheduledRun:
    return ScheduledRun(name, JobPhase.RUNNING)


def finished(name: str, phase: JobPhase, minute: float) -> ScheduledRun:
    return ScheduledRun(name, phase, finished_at=at(minute))


def decision(
    sched: Schedule,
    now: datetime,
    *,
    last: datetime | None = T0,
    runs: tuple[ScheduledRun, ...] = (),
    created: datetime | None = None,
) -> Decision:
    return decide("digest", sched, last_schedule_time=last, created_at=created, runs=runs, now=now)


def minute_name(moment: datetime) -> str:
    return f"digest-{int(moment.timestamp()) // 60}"


# ----------------------------------------------------------------- names


def test_run_name_is_the_workflow_and_the_minutes_since_the_epoch() -> None:
    assert run_name("digest", T0) == f"digest-{int(T0.timestamp()) // 60}"
    # Seconds within the minute do not change the name: it names the slot.
    assert run_name("digest", T0 + timedelta(seconds=59)) == run_name("digest", T0)
    assert run_name("digest", T0 + timedelta(minutes=1)) != run_name("digest", T0)


def test_long_workflow_names_are_cut_to_a_valid_name_that_stays_distinct() -> None:
    a, b = "a" * 250 + "x", "a" * 250 + "y"
    name_a, name_b = run_name(a, T0), run_name(b, T0)
    assert len(name_a) <= 253 and len(name_b) <= 253
    assert name_a != name_b
    assert name_a.endswith(f"-{int(T0.timestamp()) // 60}")


# ------------------------------------------------------------- decisions


@pytest.mark.parametrize(
    ("case", "sched", "now", "last", "runs", "reason", "create", "replace"),
    [
        ("not due yet", schedule(), at(5), T0, (), Reason.NOT_DUE, None, ()),
        ("due exactly now", schedule(), at(10), T0, (), Reason.CREATED, minute_name(at(10)), ()),
        ("due, late by a bit", schedule(), at(13), T0, (), Reason.CREATED, minute_name(at(10)), ()),
        (
            "many missed: only the latest",
            schedule(),
            at(95),
            T0,
            (),
            Reason.CREATED,
            minute_name(at(90)),
            (),
        ),
        (
            "second decision for the same slot",
            schedule(),
            at(11),
            T0,
            (running(minute_name(at(10))),),
            Reason.ALREADY_CREATED,
            None,
            (),
        ),
        ("suspended", schedule(suspend=True), at(30), T0, (), Reason.SUSPENDED, None, ()),
        (
            "Allow with an active run",
            schedule(concurrencyPolicy="Allow"),
            at(20),
            at(10),
            (running(minute_name(at(10))),),
            Reason.CREATED,
            minute_name(at(20)),
            (),
        ),
        (
            "Forbid with an active run",
            schedule(concurrencyPolicy="Forbid"),
            at(20),
            at(10),
            (running(minute_name(at(10))),),
            Reason.FORBIDDEN,
            None,
            (),
        ),
        (
            "Forbid once the run finished",
            schedule(concurrencyPolicy="Forbid"),
            at(21),
            at(10),
            (finished(minute_name(at(10)), JobPhase.SUCCEEDED, 15),),
            Reason.CREATED,
            minute_name(at(20)),
            (),
        ),
        (
            "Replace deletes every active run",
            schedule(concurrencyPolicy="Replace"),
            at(20),
            at(10),
            (
                running("digest-b"),
                running("digest-a"),
                finished("digest-old", JobPhase.FAILED, 5),
            ),
            Reason.CREATED,
            minute_name(at(20)),
            ("digest-a", "digest-b"),
        ),
        (
            "within startingDeadlineSeconds",
            schedule(startingDeadlineSeconds=120),
            at(12),
            T0,
            (),
            Reason.CREATED,
            minute_name(at(10)),
            (),
        ),
        (
            "beyond startingDeadlineSeconds",
            schedule(startingDeadlineSeconds=120),
            at(12, T0 + timedelta(seconds=1)),
            T0,
            (),
            Reason.MISSED_DEADLINE,
            None,
            (),
        ),
        (
            "an older slot beyond the deadline, the latest within it",
            schedule(startingDeadlineSeconds=300),
            at(32),
            T0,
            (),
            Reason.CREATED,
            minute_name(at(30)),
            (),
        ),
        ("invalid cron", schedule(cron="61 * * * *"), at(30), T0, (), Reason.INVALID, None, ()),
        ("six fields", schedule(cron="0 */10 * * * *"), at(30), T0, (), Reason.INVALID, None, ()),
        ("unknown zone", schedule(timeZone="Mars/Olympus"), at(30), T0, (), Reason.INVALID, None, ()),
        ("clock behind the last run", schedule(), at(-30), T0, (), Reason.NOT_DUE, None, ()),
    ],
)
def test_decide(
    case: str,
    sched: Schedule,
    now: datetime,
    last: datetime | None,
    runs: tuple[ScheduledRun, ...],
    reason: Reason,
    create: str | None,
    replace: tuple[str, ...],
) -> None:
    result = decision(sched, now, last=last, runs=runs)
    assert (result.reason, result.create, result.replace) == (reason, create, replace), case
    if create is not None:
        assert result.scheduled_at is not None
        assert run_name("digest", result.scheduled_at) == create


def test_a_new_workflow_counts_from_its_creation_not_from_the_epoch() -> None:
    sched = schedule()
    assert decision(sched, at(5), last=None, created=at(1)).reason is Reason.NOT_DUE
    made = decision(sched, at(12), last=None, created=at(1))
    assert made.create == minute_name(at(10))
    # With neither a last time nor a creation time, nothing is due yet.
    assert decision(sched, at(12), last=None, created=None).reason is Reason.NOT_DUE


def test_the_decision_carries_the_next_due_time() -> None:
    result = decision(schedule(), at(13))
    assert result.next_at == at(20)
    assert decision(schedule(), at(20)).next_at == at(30)
    assert decision(schedule(suspend=True), at(13)).next_at is None


def test_the_same_inputs_give_the_same_decision() -> None:
    runs = (running("digest-a"), finished("digest-b", JobPhase.SUCCEEDED, 3))
    first = decision(schedule(concurrencyPolicy="Replace"), at(31), runs=runs)
    second = decision(schedule(concurrencyPolicy="Replace"), at(31), runs=runs)
    assert first == second


def test_errors_name_the_field() -> None:
    with pytest.raises(ScheduleError, match=r"spec\.schedule\.cron"):
        check(schedule(cron="every day"))
    with pytest.raises(ScheduleError, match=r"spec\.schedule\.timeZone.*Mars"):
        check(schedule(timeZone="Mars/Olympus"))
    assert "spec.schedule.cron" in decision(schedule(cron="* * *"), at(30)).message


@pytest.mark.parametrize(
    "cron",
    [
        "0 0 30 2 *",  # the 30th of February
        "0 0 31 4,6,9,11 *",  # the 31st of 30-day months
        "15 3 31 2 *",
    ],
)
def test_a_cron_that_can_never_fire_is_invalid_with_no_next_time(cron: str) -> None:
    """Well-formed fields that name no date: an invalid schedule, said once,
    with nothing to wait for (no timer, so no retry loop)."""
    for now in (at(30), datetime(2028, 2, 28, 23, 59, tzinfo=UTC), datetime(2099, 12, 31, tzinfo=UTC)):
        result = decision(schedule(cron=cron), now)
        assert result.reason is Reason.INVALID
        assert result.next_at is None and result.create is None
        assert result.message.startswith("spec.schedule.cron:") and repr(cron) in result.message
        assert "never fires" in result.message
    with pytest.raises(ScheduleError, match=r"spec\.schedule\.cron: .* never fires"):
        next_due(schedule(cron=cron), at(30))


@pytest.mark.parametrize(
    ("cron", "now", "next_at"),
    [
        # Rare is not never: the 29th of February fires in leap years.
        ("0 0 29 2 *", at(30), datetime(2028, 2, 29, tzinfo=UTC)),
        # Day of month and weekday both set means either (as CronJobs read
        # it): every Monday of February, though there is no 30th.
        ("0 0 30 2 1", at(30), datetime(2027, 2, 1, tzinfo=UTC)),
    ],
)
def test_rare_is_not_never(cron: str, now: datetime, next_at: datetime) -> None:
    result = decision(schedule(cron=cron), now)
    assert result.reason is Reason.NOT_DUE, result.message
    assert result.next_at == next_at


# ---------------------------------------------------------------- zones


def test_time_zone_decides_the_wall_clock() -> None:
    daily = schedule(cron="0 9 * * *", timeZone="America/New_York")
    # 09:00 in New York in May is 13:00 UTC (EDT, UTC-4).
    assert next_due(daily, datetime(2026, 5, 4, 12, 0, tzinfo=UTC)) == datetime(2026, 5, 4, 13, 0, tzinfo=UTC)
    # ... and 14:00 UTC in January (EST, UTC-5).
    assert next_due(daily, datetime(2026, 1, 5, 12, 0, tzinfo=UTC)) == datetime(2026, 1, 5, 14, 0, tzinfo=UTC)


def test_a_time_skipped_by_daylight_saving_fires_once_that_day() -> None:
    # Europe/Berlin skips 02:00-03:00 on 2026-03-29.
    sched = schedule(cron="30 2 * * *", timeZone="Europe/Berlin")
    before = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    first = next_due(sched, before)
    second = next_due(sched, first)
    assert first.date() == datetime(2026, 3, 29).date()
    assert second - first >= timedelta(hours=23)
    assert latest_due(sched, first) == first


def test_macros() -> None:
    hourly = schedule(cron="@hourly")
    assert next_due(hourly, at(1)) == at(60)
    assert decision(hourly, at(61)).create == minute_name(at(60))


# --------------------------------------------------------------- history


@pytest.mark.parametrize(
    ("case", "limits", "runs", "pruned"),
    [
        (
            "keeps the newest successes",
            {"successfulJobsHistoryLimit": 2},
            (
                finished("s1", JobPhase.SUCCEEDED, 1),
                finished("s3", JobPhase.SUCCEEDED, 3),
                finished("s2", JobPhase.SUCCEEDED, 2),
            ),
            ("s1",),
        ),
        (
            "failed and cancelled share the failed limit",
            {"failedJobsHistoryLimit": 1},
            (
                finished("f1", JobPhase.FAILED, 1),
                finished("c2", JobPhase.CANCELLED, 2),
                finished("s1", JobPhase.SUCCEEDED, 1),
            ),
            ("f1",),
        ),
        (
            "limit zero removes all of a kind",
            {"successfulJobsHistoryLimit": 0, "failedJobsHistoryLimit": 0},
            (finished("s1", JobPhase.SUCCEEDED, 1), finished("f1", JobPhase.FAILED, 2)),
            ("s1", "f1"),
        ),
        (
            "active runs never count",
            {"successfulJobsHistoryLimit": 0},
            (running("r1"), ScheduledRun("p1", JobPhase.PENDING)),
            (),
        ),
        (
            "a run finished at or after now waits for the next pass",
            {"successfulJobsHistoryLimit": 0},
            (finished("now", JobPhase.SUCCEEDED, 30), finished("later", JobPhase.SUCCEEDED, 31)),
            (),
        ),
        (
            "a finished phase without a finish time is kept",
            {"failedJobsHistoryLimit": 0},
            (ScheduledRun("f", JobPhase.FAILED),),
            (),
        ),
    ],
)
def test_prune(
    case: str, limits: dict[str, int], runs: tuple[ScheduledRun, ...], pruned: tuple[str, ...]
) -> None:
    assert prune(schedule(**limits), runs, at(30)) == pruned, case


def test_from_object_reads_phase_and_finish_time() -> None:
    run = ScheduledRun.from_object(
        {"metadata": {"name": "x"}, "status": {"phase": "Failed", "finishedAt": "2026-05-04T10:05:00Z"}}
    )
    assert run == ScheduledRun("x", JobPhase.FAILED, at(5))
    assert ScheduledRun.from_object({"metadata": {"name": "y"}}).active
    assert ScheduledRun.from_object({"metadata": {"name": "z"}, "status": {"phase": "Weird"}}).active
