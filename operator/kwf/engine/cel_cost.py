"""What a ``when`` costs, known before it runs.

The CEL library evaluates without a limit and cannot be stopped once
started: four nested macros over a list of 100 items, or over list literals
alone, hold the event loop for seconds to hours. So kwf reads the expression
itself (a small parser for CEL's grammar) and bounds its work from above:

- at check time (``kwf lint``, admission, plan()'s graph check), with every
  list, map and string read from params, state or steps taken as small
  (:data:`CHECKED_INPUT`): what is over the limit then is over it for any run;
- at evaluation, with the sizes of the very values the expression reads.

Costs are in units of about 10 ns of the library's time on one core,
measured: converting a JSON node into CEL about 2 µs, copying one on each
read of a variable about 50 ns, one macro iteration about 0.4 µs, and
map() and filter() copy the list built so far at each item (about 130 ns a
node), so their cost grows with the square of their length.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from typing import Any

from kwf.engine import cel_syntax
from kwf.engine.cel_syntax import Node

JSON = Any

#: The most a ``when`` may cost, in units of about 10 ns: 5 ms by the
#: estimate, which runs two to four times over the time measured.
LIMIT = 500_000
CONVERT = 200  # per JSON node handed to the library
COPY = 5  # per node, each time a variable or a part of it is read
ITERATION = 40  # per item a macro visits
#: map() and filter() copy the list they build at each item: quadratic in its length.
ACCUMULATE = 15  # per node copied
OP = 10  # an operator or a call
#: Past this, a figure is just "too much" (keeps products of nested loops small).
CEILING = 10**15

ROOTS = frozenset({"params", "state", "steps"})
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})


class CostError(ValueError):
    """An expression whose cost cannot be bounded, or is over the limit."""


# ------------------------------------------------------------------ sizes


class Size:
    """An upper bound on a value: ``count`` items (or characters), ``weight``
    nodes and characters in all, and ``item`` bounding each of its items."""

    __slots__ = ("count", "item", "weight")

    def __init__(self, count: int, weight: int, item: Size | None = None) -> None:
        self.count, self.weight, self.item = min(count, CEILING), min(weight, CEILING), item

    def inner(self) -> Size:
        return self.item if self.item is not None else SCALAR


SCALAR = Size(0, 1)
BOOL = SCALAR
#: What check() assumes of each value read from params, state or steps: ten
#: items at every level, each of up to a hundred nodes.
CHECKED_INPUT = Size(10, 100)
CHECKED_INPUT.item = CHECKED_INPUT


def join(a: Size, b: Size, depth: int = 0) -> Size:
    """A bound on either value."""
    if a is b:
        return a
    if depth > 32:
        return a if a.weight >= b.weight else b
    if a.item is None or b.item is None:
        item = a.item if b.item is None else b.item
    else:
        item = join(a.item, b.item, depth + 1)
    return Size(max(a.count, b.count), max(a.weight, b.weight), item)


class TooLarge(Exception):
    """A value past the nodes we are willing to walk."""


def measure(value: JSON, cap: int) -> Size:
    """The Size of a JSON value; raises TooLarge past ``cap`` nodes and characters."""
    seen = [0]

    def walk(item: JSON, depth: int) -> Size:
        seen[0] += 1
        if seen[0] > cap or depth > 200:
            raise TooLarge
        if isinstance(item, str):
            # converted and compared at memory speed: a node per 256 characters
            weight = 1 + len(item) // 256
            seen[0] += weight
            if seen[0] > cap:
                raise TooLarge
            return Size(len(item), weight)
        if isinstance(item, Mapping):
            children = [walk(str(key), depth + 1) for key in item]
            children += [walk(child, depth + 1) for child in item.values()]
        elif isinstance(item, list | tuple):
            children = [walk(child, depth + 1) for child in item]
        else:
            return SCALAR
        bound: Size | None = None
        weight = 1
        for child in children:
            bound = child if bound is None else join(bound, child)
            weight += child.weight
        return Size(len(item), weight, bound)

    return walk(value, 0)


@functools.lru_cache(maxsize=8192)
def parse(expression: str) -> Node:
    """The expression's tree; raises CostError where kwf cannot read it."""
    try:
        return cel_syntax.parse(expression)
    except cel_syntax.Unreadable as error:
        raise CostError(str(error)) from None


# ------------------------------------------------------------ what it reads


def _path(node: Node, bound: frozenset[str]) -> tuple[str, tuple[str, ...]] | None:
    """``(root, keys)`` when ``node`` is ``state.a.b`` or ``params["a"]``."""
    if node[0] == "ident":
        return (node[1], ()) if node[1] in ROOTS and node[1] not in bound else None
    if node[0] == "select" or (node[0] == "index" and node[2][0] == "string"):
        inner = _path(node[1], bound)
        if inner is None:
            return None
        key = node[2] if node[0] == "select" else _literal(node[2][1])
        return (inner[0], (*inner[1], key)) if key is not None else None
    return None


def _literal(token: str) -> str | None:
    body = token.lstrip("rR")
    if body[:1] not in ("'", '"') or "\\" in body or len(body) < 2:
        return None  # bytes, escapes: read the whole parent
    quote = body[:3] if body[:3] in ('"""', "'''") else body[0]
    return body[len(quote) : -len(quote)]


def _children(node: Node) -> Iterator[Node]:
    for part in node[1:]:
        if isinstance(part, tuple):
            yield part
        elif isinstance(part, list):
            for item in part:
                if isinstance(item, tuple) and item and isinstance(item[0], tuple):
                    yield from item  # a map entry
                else:
                    yield item


#: In :func:`paths`, a key read only by ``has()``: its value is not needed.
PRESENT = "\x00has"


def paths(node: Node, bound: frozenset[str] = frozenset()) -> dict[str, set[tuple[str, ...]]]:
    """The parts of params, state and steps that ``node`` reads: ``()`` for all of one;
    a path ending in PRESENT is only tested by ``has()``."""
    found: dict[str, set[tuple[str, ...]]] = {}

    def visit(current: Node, names: frozenset[str]) -> None:
        path = _path(current, names)
        if path is not None:
            found.setdefault(path[0], set()).add(path[1])
            return
        if current[0] == "call" and current[1] == "has" and current[2] is None and len(current[3]) == 1:
            tested = _path(current[3][0], names)
            if tested is not None and tested[1]:
                found.setdefault(tested[0], set()).add((*tested[1], PRESENT))
                return
        if current[0] == "call" and current[1] in MACROS and current[2] is not None and current[3]:
            visit(current[2], names)
            variable = current[3][0]
            inner = names | {variable[1]} if variable[0] == "ident" else names
            for argument in current[3][1:]:
                visit(argument, inner)
            return
        for child in _children(current):
            visit(child, names)

    visit(node, bound)
    return found


def prune(value: JSON, keys: set[tuple[str, ...]]) -> JSON:
    """``value`` with only the parts at ``keys`` (whole lists: their indexes must hold)."""
    if keys == {(PRESENT,)}:
        return None  # has() needs it there, not what it holds
    if () in keys or not isinstance(value, Mapping):
        return value
    heads: dict[str, set[tuple[str, ...]]] = {}
    for path in keys:
        if path != (PRESENT,):
            heads.setdefault(path[0], set()).add(path[1:])
    return {head: prune(value[head], rest) for head, rest in heads.items() if head in value}


# ------------------------------------------------------------------- cost


def _add(*figures: int) -> int:
    return min(sum(figures), CEILING)


def _times(a: int, b: int) -> int:
    return min(a * b, CEILING)


def estimate(node: Node, inputs: Mapping[str, Size]) -> int:
    """An upper bound on the work of evaluating ``node``, in cost units."""
    return _cost(node, dict(inputs))[0]


def _cost(node: Node, env: dict[str, Size]) -> tuple[int, Size]:
    kind = node[0]
    if kind == "scalar":
        return 1, SCALAR
    if kind == "string":
        length = len(node[1])
        return length // 256 + 1, Size(length, 1 + length // 256)
    if kind == "ident":
        size = env.get(node[1], SCALAR)
        return _add(OP, _times(COPY, size.weight)), size
    if kind in ("select", "index"):
        cost, size = _cost(node[1], env)
        extra = _cost(node[2], env)[0] if kind == "index" else 0
        inner = size.inner()
        return _add(cost, extra, OP, _times(COPY, inner.weight)), inner
    if kind == "list" or kind == "map":
        items = [part for entry in node[1] for part in (entry if kind == "map" else (entry,))]
        total, bound, weight = 1, None, 1
        for item in items:
            cost, size = _cost(item, env)
            total, weight = _add(total, cost, OP), _add(weight, size.weight)
            bound = size if bound is None else join(bound, size)
        return total, Size(len(node[1]), weight, bound)
    if kind == "unary":
        cost, size = _cost(node[2], env)
        return _add(cost, OP), size if node[1] == "-" else BOOL
    if kind == "cond":
        condition, (then, a), (other, b) = _cost(node[1], env)[0], _cost(node[2], env), _cost(node[3], env)
        return _add(condition, max(then, other)), join(a, b)
    if kind == "binary":
        return _binary(node[1], _cost(node[2], env), _cost(node[3], env))
    if kind == "call":
        return _call(node, env)
    raise CostError(f"cannot estimate {kind}")


def _binary(op: str, left: tuple[int, Size], right: tuple[int, Size]) -> tuple[int, Size]:
    (a, x), (b, y) = left, right
    if op == "+":  # strings and lists are copied into a new one
        size = Size(x.count + y.count, x.weight + y.weight, join(x.inner(), y.inner()))
        return _add(a, b, OP, _times(COPY, size.weight)), size
    if op == "in":
        return _add(a, b, OP, _times(y.count + 1, x.weight + OP)), BOOL
    if op in ("==", "!=", "<", "<=", ">", ">="):
        return _add(a, b, OP, min(x.weight, y.weight)), BOOL
    if op in ("&&", "||"):
        return _add(a, b, OP), BOOL
    return _add(a, b, OP), SCALAR


def _call(node: Node, env: dict[str, Size]) -> tuple[int, Size]:
    _, name, target, arguments = node
    if name == "has":
        return _add(OP, *(_cost(a, env)[0] for a in arguments)), BOOL
    if name in MACROS and target is not None and arguments and arguments[0][0] == "ident":
        return _macro(name, target, arguments, env)
    cost, size = _cost(target, env) if target is not None else (0, SCALAR)
    sizes = [size] if target is not None else []
    for argument in arguments:
        more, each = _cost(argument, env)
        cost = _add(cost, more)
        sizes.append(each)
    weights = sum(s.weight for s in sizes)
    if name == "size":
        return _add(cost, OP), SCALAR
    if name == "matches":
        pattern: Node = arguments[-1] if arguments else ("scalar", "")
        if pattern[0] != "string":
            raise CostError("matches() takes its pattern as a string literal, so that its cost is known")
        # compiled once per evaluation, then run in time linear in its input
        return _add(cost, OP, regex_cost(pattern[1]), _times(100, weights)), BOOL
    if name in ("string", "bytes"):
        return _add(cost, OP, weights), Size(_times(8, weights), _times(8, weights))
    return _add(cost, OP, weights), join(SCALAR, Size(weights, weights))


_REPEAT = re.compile(r"\{(\d+)(?:,(\d*))?\}")
_BIG_CLASS = re.compile(r"\\[wWdDsSbBpP]|\(\?[a-zA-Z]*i")


def regex_cost(token: str) -> int:
    """What compiling a regular expression costs: counted repetitions multiply
    its program, Unicode classes (``\\w``, ``\\d``, case folding) widen every state.

    Measured: ``(a{1000}){100}`` 8 ms, ``\\w{1000}`` 75 ms before the library
    gives up on its size.
    """
    states = 1
    for low, high in _REPEAT.findall(token):
        states = _times(states, max(int(low), int(high or 0)) + 1)
    wide = 400 if _BIG_CLASS.search(token) else 1
    return _add(10_000, _times(40 * wide, _add(len(token), states)))


def _macro(name: str, target: Node, arguments: list[Node], env: dict[str, Size]) -> tuple[int, Size]:
    cost, over = _cost(target, env)
    variable = arguments[0][1]
    inner = dict(env)
    inner[variable] = over.inner()
    each = ITERATION
    result = SCALAR
    for argument in arguments[1:]:
        more, result = _cost(argument, inner)
        each = _add(each, more)
    total = _add(cost, _times(max(over.count, 1), each))
    if name not in ("map", "filter"):
        return total, BOOL
    kept = result if name == "map" else over.inner()
    copies = _times(over.count * (over.count + 1) // 2, kept.weight)
    total = _add(total, _times(ACCUMULATE, copies))
    if name == "map":
        return total, Size(over.count, _add(1, _times(over.count, result.weight)), result)
    return total, over


def checked_cost(expression: str) -> int:
    """The cost of ``expression`` with each input as small as :data:`CHECKED_INPUT`."""
    node = parse(expression)
    roots = paths(node)
    converting = _times(CONVERT, sum(CHECKED_INPUT.weight for _ in roots))
    return _add(converting, estimate(node, dict.fromkeys(roots, CHECKED_INPUT)))
