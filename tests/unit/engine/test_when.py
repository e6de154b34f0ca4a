"""``when`` in CEL: evaluated over params, state and steps only."""

from __future__ import annotations

import pytest

from kwf.engine import cel
from kwf.engine.cel import WhenError

VARIABLES = {"params": {"n": 2}, "state": {"counter": 5}, "steps": {"fetch": {"phase": "Succeeded"}}}


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("state.counter < 10", True),
        ("params.n > 2", False),
        ("steps.fetch.phase == 'Succeeded' && has(state.counter)", True),
        ("[1, 2, 3].exists(x, x == params.n)", True),
    ],
)
def test_when_is_evaluated(expression: str, value: bool) -> None:
    assert cel.evaluate("s", expression, VARIABLES) is value


def test_only_the_names_read_are_built() -> None:
    asked: list[str] = []

    def variables(name: str) -> object:
        asked.append(name)
        return VARIABLES[name]

    assert cel.evaluate("s", "state.counter == 5", variables)
    assert asked == ["state"]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("state.missing > 1", "step s: when 'state.missing > 1': no key 'missing'"),
        ("state.counter", "step s: when 'state.counter' must be true or false, not int 5"),
        ("state.counter + 'a' == 1", "step s: when \"state.counter + 'a' == 1\": No such overload"),
        ("size(params.n) > 0", "step s: when 'size(params.n) > 0': "),
    ],
)
def test_evaluation_errors_name_step_and_expression(expression: str, message: str) -> None:
    with pytest.raises(WhenError) as error:
        cel.evaluate("s", expression, VARIABLES)
    assert str(error.value).startswith(message)


def test_no_function_beyond_cel() -> None:
    with pytest.raises(WhenError, match="Undefined variable or function: 'open'"):
        cel.evaluate("s", "open('/etc/passwd') == ''", VARIABLES)
