"""``when``: a CEL expression over ``params``, ``state`` and ``steps``.

CEL has no loops without bounds, no I/O and no side effects; no function is
added to its standard ones, so an expression can only read the three values
it is given. Each expression is compiled once and kept.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

import cel

JSON = Any

#: The names a ``when`` expression may read.
VARIABLES = frozenset({"params", "state", "steps"})


#: Macros bind a name of their own: ``list.exists(x, x > 1)``.
_BOUND = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")


class WhenError(ValueError):
    """A ``when`` that does not parse, fails to evaluate, or is not a bool."""


@functools.lru_cache(maxsize=8192)
def _compile(expression: str) -> tuple[Any, frozenset[str]]:
    try:
        program = cel.compile(expression)
    except (ValueError, RuntimeError) as error:
        raise WhenError(f"expression {expression!r} does not parse: {_first_line(error)}") from None
    used = frozenset(program.references()["variables"])
    unknown = used - VARIABLES - set(_BOUND.findall(expression))
    if unknown:
        raise WhenError(
            f"expression {expression!r} reads {', '.join(sorted(unknown))}; "
            "it may read only params, state and steps"
        )
    return program, used & VARIABLES


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    # The parser repeats the expression with a caret under the fault; the
    # first line already names the position, after the expression we name too.
    line = text.splitlines()[0] if text else type(error).__name__
    _, found, position = line.partition("ERROR: <input>:")
    return position if found else line


def check(expression: str) -> str | None:
    """Why ``expression`` cannot be a ``when``, or None when it can."""
    try:
        _compile(expression)
    except WhenError as error:
        return str(error)
    return None


def evaluate(step: str, expression: str, variables: Callable[[str], JSON] | Mapping[str, JSON]) -> bool:
    """The value of ``step``'s ``when``; raises WhenError naming step and expression.

    ``variables`` gives ``params``, ``state`` and ``steps``; as a function it
    is called only for the names the expression reads (building ``steps`` for
    a large run costs more than evaluating most expressions).
    """
    try:
        program, used = _compile(expression)
    except WhenError as error:
        raise WhenError(f"step {step}: when: {error}") from None
    get = variables.__getitem__ if isinstance(variables, Mapping) else variables
    context = {name: get(name) for name in used}
    try:
        value = program.execute(context)
    except KeyError as error:
        raise WhenError(f"step {step}: when {expression!r}: no key {error.args[0]!r}") from None
    except IndexError as error:
        raise WhenError(f"step {step}: when {expression!r}: {error}") from None
    except (TypeError, ValueError, RuntimeError) as error:
        raise WhenError(f"step {step}: when {expression!r}: {_first_line(error)}") from None
    if not isinstance(value, bool):
        raise WhenError(
            f"step {step}: when {expression!r} must be true or false, not {type(value).__name__} {value!r}"
        )
    return value
