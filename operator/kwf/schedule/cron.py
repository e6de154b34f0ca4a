"""The decisions behind a Workflow's ``spec.schedule``, with time as an argument.

Given the schedule, the last time it fired, the runs it owns and ``now``,
:func:`decide` says which run to create (if any) and which running ones to
delete first; :func:`prune` says which finished runs fall outside the history
limits. Nothing here reads a clock or talks to the API server.

The semantics follow the Kubernetes CronJob controller:

- Only the latest missed time starts a run: after a long outage one run is
  created, not one per missed minute.
- With ``startingDeadlineSeconds``, a time older than that is not started late.
- ``Forbid`` waits while a run is active (the missed time starts once it
  finishes, if still within the deadline); ``Replace`` deletes the active runs
  and starts the new one; ``Allow`` starts it regardless.
- A run's name is ``<workflow>-<minutes since the epoch of its scheduled
  time>``: a second decision for the same time (an operator restart, a second
  event) meets the first run by name instead of starting another.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from kwf.api import JobPhase, Schedule

JSON = Any

#: Names of kwf Jobs are DNS subdomains.
MAX_RUN_NAME = 253


class ScheduleError(ValueError):
    """A schedule that can never fire; the message names the field."""


class Reason(enum.StrEnum):
    """Why a decision came out the way it did (the ``Scheduled`` condition's reason)."""

    CREATED = "RunCreated"
    ALREADY_CREATED = "RunExists"
    NOT_DUE = "Waiting"
    SUSPENDED = "Suspended"
    FORBIDDEN = "RunActive"
    MISSED_DEADLINE = "MissedDeadline"
    INVALID = "InvalidSchedule"

    @property
    def healthy(self) -> bool:
        """Whether the schedule works as asked (the condition's status)."""
        return self not in (Reason.MISSED_DEADLINE, Reason.INVALID)


@dataclasses.dataclass(frozen=True)
class ScheduledRun:
    """What the schedule needs to know of one run it owns."""

    name: str
    phase: JobPhase = JobPhase.PENDING
    finished_at: datetime | None = None

    @classmethod
    def from_object(cls, obj: Mapping[str, JSON]) -> ScheduledRun:
        status = obj.get("status") or {}
        try:
            phase = JobPhase(status.get("phase") or JobPhase.PENDING)
        except ValueError:
            phase = JobPhase.PENDING  # an unknown phase is treated as still going
        finished = status.get("finishedAt")
        return cls(
            name=obj["metadata"]["name"],
            phase=phase,
            finished_at=parse_time(finished) if finished else None,
        )

    @property
    def active(self) -> bool:
        return not self.phase.finished


@dataclasses.dataclass(frozen=True)
class Decision:
    reason: Reason
    message: str
    #: the run to create now, and the scheduled time it stands for
    create: str | None = None
    scheduled_at: datetime | None = None
    #: active runs to delete before creating (policy Replace)
    replace: tuple[str, ...] = ()
    #: the first scheduled time after ``now`` (None when suspended or invalid)
    next_at: datetime | None = None


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def zone(schedule: Schedule) -> ZoneInfo:
    try:
        return ZoneInfo(schedule.time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"spec.schedule.timeZone: unknown time zone {schedule.time_zone!r}") from exc


def check(schedule: Schedule) -> ZoneInfo:
    """Raise :class:`ScheduleError` unless the cron expression and zone are usable."""
    expression = schedule.cron.strip()
    if not expression.startswith("@") and len(expression.split()) != 5:
        raise ScheduleError(
            f"spec.schedule.cron: expected five fields (minute hour day month weekday)"
            f" or @hourly/@daily/..., got {schedule.cron!r}"
        )
    if not croniter.is_valid(expression):
        raise ScheduleError(f"spec.schedule.cron: not a valid cron expression: {schedule.cron!r}")
    return zone(schedule)


def latest_due(schedule: Schedule, now: datetime) -> datetime:
    """The latest scheduled time at or before ``now``, in UTC."""
    tz = check(schedule)
    # croniter's get_prev is strictly before its start, so start just after now.
    start = now.astimezone(tz) + timedelta(microseconds=1)
    try:
        due: datetime = croniter(schedule.cron.strip(), start).get_prev(datetime)
    except CroniterBadDateError as exc:
        raise _never_fires(schedule) from exc
    return due.astimezone(UTC)


def next_due(schedule: Schedule, now: datetime) -> datetime:
    """The first scheduled time strictly after ``now``, in UTC."""
    tz = check(schedule)
    try:
        due: datetime = croniter(schedule.cron.strip(), now.astimezone(tz)).get_next(datetime)
    except CroniterBadDateError as exc:
        raise _never_fires(schedule) from exc
    return due.astimezone(UTC)


def _never_fires(schedule: Schedule) -> ScheduleError:
    # Well-formed fields can still name no date at all (the 30th of February):
    # croniter gives up after searching decades, and no later moment helps.
    return ScheduleError(
        f"spec.schedule.cron: {schedule.cron!r} never fires: no date matches its day and month fields"
    )


def run_name(workflow: str, scheduled_at: datetime) -> str:
    """``<workflow>-<minutes since the epoch>``, cut (with a hash) to a valid length."""
    suffix = f"-{int(scheduled_at.timestamp()) // 60}"
    name = f"{workflow}{suffix}"
    if len(name) <= MAX_RUN_NAME:
        return name
    digest = hashlib.sha256(workflow.encode()).hexdigest()[:6]
    head = workflow[: MAX_RUN_NAME - len(suffix) - len(digest) - 1].rstrip("-.")
    return f"{head}-{digest}{suffix}"


def decide(
    workflow: str,
    schedule: Schedule,
    *,
    last_schedule_time: datetime | None,
    created_at: datetime | None,
    runs: Iterable[ScheduledRun],
    now: datetime,
) -> Decision:
    """What to do at ``now``. ``runs`` are the runs this Workflow's schedule owns."""
    try:
        check(schedule)
        if schedule.suspend:
            return Decision(Reason.SUSPENDED, "spec.schedule.suspend is true: no new runs")
        upcoming = next_due(schedule, now)
        due = latest_due(schedule, now)
    except ScheduleError as exc:
        # No next time either: nothing is requeued, the condition says it once.
        return Decision(Reason.INVALID, str(exc))
    earliest = last_schedule_time or created_at or now
    if due <= earliest:
        return Decision(Reason.NOT_DUE, f"next run at {_iso(upcoming)}", next_at=upcoming)
    name = run_name(workflow, due)
    by_name = {run.name: run for run in runs}
    if name in by_name:
        return Decision(
            Reason.ALREADY_CREATED,
            f"run {name} for {_iso(due)} exists",
            scheduled_at=due,
            next_at=upcoming,
        )
    deadline = schedule.starting_deadline_seconds
    if deadline is not None and due + timedelta(seconds=deadline) < now:
        return Decision(
            Reason.MISSED_DEADLINE,
            f"missed the run for {_iso(due)}: more than startingDeadlineSeconds={deadline} ago",
            next_at=upcoming,
        )
    active = tuple(sorted(run.name for run in by_name.values() if run.active))
    if active and schedule.concurrency_policy == "Forbid":
        return Decision(
            Reason.FORBIDDEN,
            f"run for {_iso(due)} waits: concurrencyPolicy Forbid and {', '.join(active)} still running",
            next_at=upcoming,
        )
    replace = active if schedule.concurrency_policy == "Replace" else ()
    return Decision(
        Reason.CREATED,
        f"created run {name} for {_iso(due)}",
        create=name,
        scheduled_at=due,
        replace=replace,
        next_at=upcoming,
    )


def prune(schedule: Schedule, runs: Sequence[ScheduledRun], now: datetime) -> tuple[str, ...]:
    """Finished runs beyond the history limits, oldest first.

    Only runs that finished before ``now`` count: a run that finishes while a
    decision is being carried out is left for the next one, so one pass never
    depends on what happened during it.
    """
    succeeded: list[ScheduledRun] = []
    failed: list[ScheduledRun] = []
    for run in runs:
        if run.active or run.finished_at is None or run.finished_at >= now:
            continue
        (succeeded if run.phase is JobPhase.SUCCEEDED else failed).append(run)
    doomed: list[ScheduledRun] = []
    for group, keep in (
        (succeeded, schedule.successful_jobs_history_limit),
        (failed, schedule.failed_jobs_history_limit),
    ):
        group.sort(key=lambda run: (run.finished_at, run.name))
        doomed.extend(group[: max(len(group) - keep, 0)])
    doomed.sort(key=lambda run: (run.finished_at, run.name))
    return tuple(run.name for run in doomed)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
