"""The status patch: an RFC 7386 diff, so keys removed from shared state are removed."""

from __future__ import annotations

import pydantic
import pytest

from kwf.api import Job
from kwf.engine.state import merge_patch
from kwf.operator.controller import describe, merge_diff


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
