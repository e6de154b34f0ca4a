"""The Workflow status a schedule writes: its Scheduled condition, and Stalled
while the schedule can never fire (pure: the decision and ``now`` are given)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kwf.api import Schedule
from kwf.schedule import Reason, decide
from kwf.schedule.scheduler import CONDITION, STALLED, status_patch

JSON = Any
T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def workflow(conditions: list[dict[str, JSON]] | None = None) -> dict[str, JSON]:
    return {"metadata": {"name": "digest", "generation": 3}, "status": {"conditions": conditions or []}}


def patch_for(cron: str, body: dict[str, JSON], now: datetime = T0) -> dict[str, JSON]:
    schedule = Schedule.model_validate({"cron": cron})
    decision = decide("digest", schedule, last_schedule_time=T0, created_at=None, runs=(), now=now)
    return status_patch(body, decision, (), now)


def by_type(patch: dict[str, JSON]) -> dict[str, dict[str, JSON]]:
    return {c["type"]: c for c in patch["conditions"]}


def test_a_schedule_that_never_fires_is_stalled_naming_the_field() -> None:
    found = by_type(patch_for("0 0 30 2 *", workflow()))
    assert set(found) == {CONDITION, STALLED}
    assert (found[STALLED]["status"], found[STALLED]["reason"]) == ("True", Reason.INVALID.value)
    assert (found[CONDITION]["status"], found[CONDITION]["reason"]) == ("False", Reason.INVALID.value)
    assert found[STALLED]["message"].startswith("spec.schedule.cron: '0 0 30 2 *' never fires")
    assert found[STALLED]["observedGeneration"] == 3


def test_the_same_decision_later_writes_nothing_new() -> None:
    """What makes it "once": a second pass yields the very status already
    there (transition times kept), so the scheduler skips the write."""
    first = patch_for("0 0 30 2 *", workflow())
    body = workflow(first["conditions"]) | {"status": dict(first)}
    again = patch_for("0 0 30 2 *", body, now=T0 + timedelta(hours=5))
    assert again == first


def test_fixing_the_schedule_removes_its_stalled_condition_only() -> None:
    stalled = patch_for("0 0 30 2 *", workflow())["conditions"]
    fixed = by_type(patch_for("0 0 28 2 *", workflow(stalled)))
    assert set(fixed) == {CONDITION}
    assert fixed[CONDITION]["status"] == "True"
    # Another writer's Stalled, for another reason, is left as it is.
    theirs = {
        "type": STALLED,
        "status": "True",
        "reason": "NotParsed",
        "message": "spec.steps[0]: ...",
        "lastTransitionTime": "2026-05-04T09:00:00Z",
    }
    kept = by_type(patch_for("0 0 28 2 *", workflow([theirs])))
    assert kept[STALLED] == theirs
    # An impossible schedule takes Stalled over: the list is a map by type.
    taken = patch_for("0 0 30 2 *", workflow([theirs]))["conditions"]
    assert [c["type"] for c in taken].count(STALLED) == 1
