"""Leader election's decision: who may hold the Lease at a given moment, and
what is written. Pure: the Lease is a dict, the time an argument."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kwf.operator.leader import Action, decide, micro_time, released, term_end

NOW = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)


def lease(holder: str | None, renewed: datetime | None, *, seconds: int | None = 15, **spec: Any) -> Any:
    fields: dict[str, Any] = {"leaseTransitions": 3, **spec}
    if holder is not None:
        fields["holderIdentity"] = holder
    if renewed is not None:
        fields["renewTime"] = micro_time(renewed)
        fields.setdefault("acquireTime", micro_time(renewed - timedelta(minutes=5)))
    if seconds is not None:
        fields["leaseDurationSeconds"] = seconds
    return {"metadata": {"name": "kwf", "namespace": "kwf-system", "resourceVersion": "41"}, "spec": fields}


def test_no_lease_is_created_holding_it() -> None:
    decision = decide(None, "a", NOW, lease_seconds=20)
    assert decision.action is Action.CREATE and decision.action.leading
    assert decision.spec == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 20,
        "acquireTime": "2026-03-01T12:00:00.250000Z",
        "renewTime": "2026-03-01T12:00:00.250000Z",
        "leaseTransitions": 0,
    }
    assert decision.expires == NOW + timedelta(seconds=20)


@pytest.mark.parametrize(
    ("renewed_ago", "seconds", "action"),
    [
        (0.0, 15, Action.WAIT),
        (14.999, 15, Action.WAIT),
        (15.0, 15, Action.TAKE_OVER),  # the term ends at renewTime + duration, exclusive
        (16.0, 15, Action.TAKE_OVER),
        (16.0, 30, Action.WAIT),  # the holder's declared duration counts, not ours
        (3600.0, 15, Action.TAKE_OVER),
    ],
)
def test_another_holder_is_waited_for_until_its_term_ends(
    renewed_ago: float, seconds: int, action: Action
) -> None:
    renewed = NOW - timedelta(seconds=renewed_ago)
    decision = decide(lease("b", renewed, seconds=seconds), "a", NOW)
    assert decision.action is action
    if action is Action.WAIT:
        assert decision.holder == "b" and decision.spec is None
        assert decision.expires == renewed + timedelta(seconds=seconds)
    else:
        assert decision.holder == "a"


def test_taking_over_counts_a_transition_and_starts_a_new_term() -> None:
    decision = decide(lease("b", NOW - timedelta(seconds=40)), "a", NOW, lease_seconds=15)
    assert decision.action is Action.TAKE_OVER
    assert decision.spec == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "acquireTime": micro_time(NOW),
        "renewTime": micro_time(NOW),
        "leaseTransitions": 4,
    }


def test_renewing_keeps_the_acquisition_and_the_count() -> None:
    held = lease("a", NOW - timedelta(seconds=5))
    decision = decide(held, "a", NOW)
    assert decision.action is Action.RENEW
    assert decision.spec is not None
    assert decision.spec["renewTime"] == micro_time(NOW)
    assert decision.spec["acquireTime"] == held["spec"]["acquireTime"]
    assert decision.spec["leaseTransitions"] == 3


def test_a_lease_recorded_as_ours_is_renewed_even_after_its_term() -> None:
    """A restarted container of the same pod: its predecessor is gone."""
    decision = decide(lease("a", NOW - timedelta(hours=1)), "a", NOW)
    assert decision.action is Action.RENEW


@pytest.mark.parametrize(
    "held",
    [
        lease("", NOW),  # handed back
        lease(None, NOW),  # no holder at all
        lease("b", None),  # a holder that never renewed
        {"metadata": {"name": "kwf"}},  # an empty Lease
        lease("b", None, renewTime="not a time"),
    ],
    ids=["handed-back", "no-holder", "never-renewed", "empty", "garbled-time"],
)
def test_a_lease_nobody_holds_is_taken_at_once(held: Any) -> None:
    decision = decide(held, "a", NOW)
    assert decision.action is Action.TAKE_OVER
    assert decision.spec is not None and decision.spec["holderIdentity"] == "a"


def test_a_missing_or_bad_duration_falls_back_to_ours() -> None:
    renewed = NOW - timedelta(seconds=10)
    for seconds in (None, 0, -5):
        assert term_end(lease("b", renewed, seconds=seconds)["spec"], 12) == renewed + timedelta(seconds=12)
    assert decide(lease("b", renewed, seconds=None), "a", NOW, lease_seconds=12).action is Action.WAIT
    assert decide(lease("b", renewed, seconds=None), "a", NOW, lease_seconds=8).action is Action.TAKE_OVER


def test_times_from_other_writers_parse_with_or_without_fractions() -> None:
    spec = {"renewTime": "2026-03-01T11:59:50Z", "leaseDurationSeconds": 15}
    assert term_end(spec, 15) == datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)
    assert decide({"spec": {**spec, "holderIdentity": "b"}}, "a", NOW).action is Action.WAIT


def test_an_empty_identity_is_refused() -> None:
    with pytest.raises(ValueError, match="identity"):
        decide(None, "", NOW)


def test_handing_back_only_what_is_ours() -> None:
    spec = released(lease("a", NOW - timedelta(seconds=2)), "a", NOW)
    assert spec is not None
    assert spec["holderIdentity"] == "" and spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 3
    assert decide({"spec": spec}, "b", NOW).action is Action.TAKE_OVER
    assert released(lease("b", NOW), "a", NOW) is None


@given(
    renewed_ago=st.floats(min_value=-5, max_value=120),
    seconds=st.integers(min_value=1, max_value=60),
    holder=st.sampled_from(["a", "b", ""]),
)
def test_at_most_one_candidate_may_write_at_any_moment(renewed_ago: float, seconds: int, holder: str) -> None:
    """Whatever the Lease says, two candidates never both read "lead" from a
    live term; when it has ended, both may try, and the resourceVersion
    precondition of the write picks one."""
    held = lease(holder, NOW - timedelta(seconds=renewed_ago), seconds=seconds)
    a, b = decide(held, "a", NOW), decide(held, "b", NOW)
    live = holder != "" and renewed_ago < seconds
    if live:
        assert [d.action.leading for d in (a, b)].count(True) == 1
        assert (a if holder == "a" else b).action is Action.RENEW
    else:
        assert a.action.leading and b.action.leading
