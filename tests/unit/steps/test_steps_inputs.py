from __future__ import annotations

import random
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kwf.steps import decode_inputs, encode_inputs
from kwf.steps.inputs import CHUNK
from tests.unit.steps.conftest import make_step

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
SPEC = make_step(script={"source": "print(1)"})


@given(st.dictionaries(st.text(max_size=10), json_values), st.dictionaries(st.text(max_size=10), json_values))
def test_round_trip(params: dict[str, object], state: dict[str, object]) -> None:
    decoded = decode_inputs(encode_inputs(SPEC, params, state))
    assert decoded.spec == SPEC.dump()
    assert decoded.params == params
    assert decoded.state == state


def test_a_mebibyte_of_state_in_chunks_under_64_kib() -> None:
    rng = random.Random(7)  # hard to compress: letters at random
    state = {f"k{i}": "".join(rng.choices(string.ascii_letters, k=1000)) for i in range(1024)}
    env = encode_inputs(SPEC, {}, state)
    chunks = [name for name in env if name.startswith("KWF_INPUT_")]
    assert len(chunks) == int(env["KWF_INPUTS"]) > 10
    assert max(len(value.encode()) for value in env.values()) <= CHUNK < 64 * 1024
    assert decode_inputs(env).state == state


def test_too_large_names_both_sizes() -> None:
    rng = random.Random(8)
    state = {"blob": "".join(rng.choices(string.printable, k=2 * 1024 * 1024))}
    with pytest.raises(
        ValueError, match=r"inputs are \d+ bytes \(\d+ bytes encoded\), over the cap of 1048576"
    ):
        encode_inputs(SPEC, {}, state)


def test_a_missing_chunk_is_named() -> None:
    rng = random.Random(9)
    env = encode_inputs(SPEC, {}, {"blob": "".join(rng.choices(string.ascii_letters, k=200_000))})
    del env["KWF_INPUT_1"]
    with pytest.raises(ValueError, match=r"KWF_INPUT_1 is not set \(KWF_INPUTS=\d+\)"):
        decode_inputs(env)


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({}, "KWF_INPUTS is not set"),
        ({"KWF_INPUTS": "x"}, "KWF_INPUTS must be a number"),
        ({"KWF_INPUTS": "1", "KWF_INPUT_0": "not base64!"}, "do not decode"),
    ],
)
def test_broken_inputs_are_named(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        decode_inputs(env)
