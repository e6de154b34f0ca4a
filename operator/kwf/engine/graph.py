"""Checks on the whole graph of a run, and its order.

The schema checks one step at a time; what needs every step lives here:
duplicate names, unknown ``dependsOn`` and ``onFailure`` targets, cycles,
templates and ``when`` expressions that do not parse. plan() runs these on
every pass, so the answer is kept per steps tuple.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

from kwf.api import Step
from kwf.engine import cel, templates
from kwf.engine.memo import by_identity


@by_identity(maxsize=256)
def problems(steps: tuple[Step, ...]) -> list[str]:
    """Everything wrong with the graph, one clear sentence each; empty when it can run."""
    found: list[str] = []
    names: set[str] = set()
    for step in steps:
        if step.name in names:
            found.append(f"duplicate step name {step.name!r}")
        names.add(step.name)
    handled_by: dict[str, str] = {}
    for step in steps:
        found.extend(_step_problems(step, names))
        handler = step.on_failure
        if handler is None or handler not in names:
            continue
        if handler == step.name:
            found.append(f"step {step.name}: onFailure names the step itself")
        elif handler in handled_by:
            found.append(f"step {handler} is the onFailure of both {handled_by[handler]} and {step.name}")
        else:
            handled_by[handler] = step.name
    by_name = {step.name: step for step in steps}
    for handler, primary in handled_by.items():
        if primary in _ancestors(by_name, handler):
            found.append(f"step {handler}: it handles {primary}'s failure, so it cannot wait for {primary}")
    cycle = find_cycle(steps)
    if cycle:
        found.append("cycle: " + " -> ".join(cycle))
    return found


def _step_problems(step: Step, names: set[str]) -> Iterable[str]:
    for dependency in step.depends_on:
        if dependency not in names:
            yield f"step {step.name}: dependsOn names unknown step {dependency!r}"
    if step.on_failure is not None and step.on_failure not in names:
        yield f"step {step.name}: onFailure names unknown step {step.on_failure!r}"
    if step.when is not None:
        why = cel.check(step.when)
        if why:
            yield f"step {step.name}: when: {why}"
    yield from templates.problems(step)


def _ancestors(by_name: dict[str, Step], name: str) -> set[str]:
    seen: set[str] = set()
    stack = list(by_name[name].depends_on)
    while stack:
        current = stack.pop()
        if current in seen or current not in by_name:
            continue
        seen.add(current)
        stack.extend(by_name[current].depends_on)
    return seen


def _after(steps: Sequence[Step]) -> dict[str, list[str]]:
    """What each step waits for: its dependsOn, and for a handler its primary."""
    edges = {step.name: list(step.depends_on) for step in steps}
    for step in steps:
        if step.on_failure is not None and step.on_failure in edges and step.on_failure != step.name:
            edges[step.on_failure].append(step.name)
    return edges


def find_cycle(steps: Sequence[Step]) -> list[str] | None:
    """A cycle as the steps run around it (``[a, b, a]``: b waits for a, a for b), or None."""
    edges = _after(steps)
    colour: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in edges:
        if colour.get(root):
            continue
        path = [root]
        iterators = [iter(edges[root])]
        colour[root] = 1
        while iterators:
            following = next(iterators[-1], None)
            if following is None:
                colour[path.pop()] = 2
                iterators.pop()
            elif following not in edges or colour.get(following) == 2:
                continue
            elif colour.get(following) == 1:
                loop = [*path[path.index(following) :], following]
                return list(reversed(loop))
            else:
                colour[following] = 1
                path.append(following)
                iterators.append(iter(edges[following]))
    return None


@by_identity(maxsize=256)
def topological_order(steps: tuple[Step, ...]) -> tuple[str, ...]:
    """Step names, each after everything it waits for, ties kept in spec order.

    Steps on a cycle (see :func:`find_cycle`) are left out; unknown
    dependencies are ignored here (:func:`problems` reports them).
    """
    edges = _after(steps)
    waiting = {name: sum(1 for d in deps if d in edges) for name, deps in edges.items()}
    dependents: dict[str, list[str]] = {name: [] for name in edges}
    for name, deps in edges.items():
        for dependency in deps:
            if dependency in dependents:
                dependents[dependency].append(name)
    position = {name: index for index, name in enumerate(edges)}
    ready = [name for name, count in waiting.items() if count == 0]
    order: list[str] = []
    heap = [(position[name], name) for name in ready]
    heapq.heapify(heap)
    while heap:
        _, name = heapq.heappop(heap)
        order.append(name)
        for dependent in dependents[name]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(heap, (position[dependent], dependent))
    return tuple(order)


def downstream(steps: Sequence[Step], roots: Iterable[str]) -> set[str]:
    """``roots`` and every step that runs after one of them, transitively."""
    edges = _after(steps)
    dependents: dict[str, list[str]] = {name: [] for name in edges}
    for name, deps in edges.items():
        for dependency in deps:
            if dependency in dependents:
                dependents[dependency].append(name)
    seen: set[str] = set()
    stack = [root for root in roots if root in edges]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack.extend(dependents[name])
    return seen
