"""Cron schedules of Workflows: which run is due (pure, :mod:`.cron`) and the
API writes that carry it out (:mod:`.scheduler`)."""

from kwf.schedule.cron import (
    Decision,
    Reason,
    ScheduledRun,
    ScheduleError,
    decide,
    next_due,
    prune,
    run_name,
)
from kwf.schedule.scheduler import Scheduler, Tick

__all__ = [
    "Decision",
    "Reason",
    "ScheduleError",
    "ScheduledRun",
    "Scheduler",
    "Tick",
    "decide",
    "next_due",
    "prune",
    "run_name",
]
