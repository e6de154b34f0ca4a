"""Shared state: RFC 7386 merge patches, saveAs paths and size messages."""

from __future__ import annotations

import pytest

from kwf.engine.state import format_size, merge_patch, set_path, size_problem


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [  # the examples of RFC 7386, appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_follows_rfc_7386(target: object, patch: object, result: object) -> None:
    assert merge_patch(target, patch) == result


def test_merge_patch_leaves_its_arguments_alone() -> None:
    target = {"a": {"b": 1}}
    merge_patch(target, {"a": {"b": 2, "c": 3}})
    assert target == {"a": {"b": 1}}


def test_set_path_makes_objects_on_the_way() -> None:
    state = {"x": 1, "a": "text"}
    assert set_path(state, "a.b.c", [1]) == {"x": 1, "a": {"b": {"c": [1]}}}
    assert state == {"x": 1, "a": "text"}


def test_size_problem_names_both_sizes() -> None:
    assert size_problem("shared state", 300 * 1024, 256 * 1024) == (
        "shared state would be 300 KiB, over the limit of 256 KiB"
    )
    assert size_problem("shared state", 256 * 1024 + 1, 256 * 1024) == (
        "shared state would be 262145 bytes, over the limit of 262144 bytes"
    )
    assert size_problem("shared state", 10, 10) is None


def test_format_size() -> None:
    assert [format_size(n) for n in (512, 1536, 3 * 1024 * 1024)] == ["512 bytes", "1.5 KiB", "3 MiB"]
