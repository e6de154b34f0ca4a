"""``when``: a CEL expression over ``params``, ``state`` and ``steps``.

CEL has no loops without bounds, no I/O and no side effects; no function is
added to its standard ones, so an expression can only read the three values
it is given. Each expression is compiled once and kept.

Its work is bounded before it runs (see :mod:`kwf.engine.cel_cost`): check()
refuses what is over the limit for any run, evaluate() what is over it for
the values at hand, and hands the library only the parts of params, state and
steps the expression reads.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

import cel

from kwf.engine import cel_cost
from kwf.engine.cel_cost import CostError, TooLarge, measure, prune

JSON = Any

#: The cost limit of one evaluation (see kwf.engine.cel_cost).
LIMIT = cel_cost.LIMIT

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
    try:
        cost = cel_cost.checked_cost(expression)
    except CostError as error:
        raise WhenError(f"expression {expression!r}: kwf cannot bound its cost: {error}") from None
    if cost > LIMIT:
        raise WhenError(
            f"expression {expression!r} would cost about {cost:,}, over the limit of {LIMIT:,}, "
            "even with small params, state and steps (nested macros multiply: "
            "keep a count or a flag in the state and test that)"
        )
    return program, used & VARIABLES


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    # The parser repeats the expression with a caret under the fault; the
    # first line already names the position, after the expression we name too.
    line = text.splitlines()[0] if text else type(error).__name__
    _, found, position = line.partition("ERROR: <input>:")
    return position if found else line


def _context(
    step: str, expression: str, used: frozenset[str], get: Callable[[str], JSON], limit: int
) -> dict[str, JSON]:
    """The parts of params, state and steps the expression reads; raises WhenError over ``limit``."""
    node = cel_cost.parse(expression)
    reads = cel_cost.paths(node)
    cap = limit // cel_cost.CONVERT + 1  # nodes: converting more is over the limit already
    context: dict[str, JSON] = {}
    sizes: dict[str, cel_cost.Size] = {}
    for name in sorted(used):
        value = prune(get(name), reads.get(name, {()}))
        try:
            sizes[name] = measure(value, cap)
        except TooLarge:
            raise WhenError(
                f"step {step}: when {expression!r}: {name} is too large to evaluate it on "
                f"(over {cap:,} values read, a string counting one per 256 characters); "
                "keep a count or a flag in the state and test that"
            ) from None
        cap -= sizes[name].weight
        context[name] = value
    converting = cel_cost.CONVERT * sum(size.weight for size in sizes.values())
    cost = converting + cel_cost.estimate(node, sizes)
    if cost > limit:
        read = ", ".join(f"{name} about {size.weight:,} values" for name, size in sizes.items())
        raise WhenError(
            f"step {step}: when {expression!r} would cost about {cost:,}, over the limit of {limit:,}"
            f"{f' (it reads {read})' if read else ''}; "
            "nested macros multiply: keep a count or a flag in the state and test that"
        )
    return context


def check(expression: str) -> str | None:
    """Why ``expression`` cannot be a ``when``, or None when it can."""
    try:
        _compile(expression)
    except WhenError as error:
        return str(error)
    return None


def evaluate(
    step: str,
    expression: str,
    variables: Callable[[str], JSON] | Mapping[str, JSON],
    limit: int = LIMIT,
) -> bool:
    """The value of ``step``'s ``when``; raises WhenError naming step and expression.

    ``variables`` gives ``params``, ``state`` and ``steps``; as a function it
    is called only for the names the expression reads (building ``steps`` for
    a large run costs more than evaluating most expressions). Over ``limit``
    for these values, it is not run at all.
    """
    try:
        program, used = _compile(expression)
    except WhenError as error:
        raise WhenError(f"step {step}: when: {error}") from None
    get = variables.__getitem__ if isinstance(variables, Mapping) else variables
    context = _context(step, expression, used, get, limit)
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
