from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kwf.steps import FrameError, frame, unframe

noise = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)


@given(st.binary(max_size=5000))
def test_any_bytes_round_trip(data: bytes) -> None:
    assert unframe(frame(data)) == data


@given(st.binary(max_size=2000), noise, noise)
def test_surrounding_output_is_ignored(data: bytes, before: str, after: str) -> None:
    assert unframe(before + frame(data) + after) == data


def test_no_frame_at_all() -> None:
    assert unframe("just a step printing things\n") is None
    assert unframe("") is None


def test_frame_lines_are_short_and_on_their_own() -> None:
    text = "no newline at the end" + frame(b"x" * 1000)
    lines = text.splitlines()
    assert lines[0] == "no newline at the end"
    assert lines[1].startswith("----- kwf result begin v1 bytes=1000 ")
    assert max(len(line) for line in lines[2:-1]) <= 76


@given(st.binary(min_size=1, max_size=3000), st.data())
def test_cut_frames_are_rejected(data: bytes, pick: st.DataObject) -> None:
    text = frame(data)
    end_line = text.rindex("----- kwf result end")
    after_begin = text.index("\n", text.index("----- kwf result begin")) + 1
    cut = pick.draw(st.integers(min_value=after_begin, max_value=end_line + 10))
    with pytest.raises(FrameError, match="cut short"):
        unframe(text[:cut])


def test_corrupt_body_is_rejected() -> None:
    text = frame(b"hello world, this is a result")
    lines = text.splitlines(keepends=True)
    body = lines[2]
    lines[2] = ("B" if body[0] != "B" else "C") + body[1:]
    with pytest.raises(FrameError, match="does not match its sha256"):
        unframe("".join(lines))
    lines[2] = "!!!!" + body[4:]
    with pytest.raises(FrameError, match="invalid base64"):
        unframe("".join(lines))


def test_wrong_size_is_rejected() -> None:
    text = frame(b"12345").replace("bytes=5 ", "bytes=6 ")
    with pytest.raises(FrameError, match="says 6 bytes but holds 5"):
        unframe(text)


def test_the_sha256_picks_the_real_frame_over_a_forged_one() -> None:
    real, forged = b'{"output": "real"}', b'{"output": "forged"}'
    log = frame(real) + "step noise\n" + frame(forged)
    assert unframe(log) == forged  # without the termination message: the last one
    assert unframe(log, sha256=hashlib.sha256(real).hexdigest()) == real
    assert unframe(log, sha256="0" * 64) is None


def test_the_last_intact_frame_wins_over_an_earlier_cut_one() -> None:
    first = frame(b"first")
    log = first[: len(first) // 2] + frame(b"second")
    assert unframe(log) == b"second"
