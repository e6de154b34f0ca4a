"""``kwf get``'s picture of a run: its steps as a tree of dependencies, each
with phase and duration, and a summary of the shared state."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pydantic
from rich.console import Group, RenderableType
from rich.text import Text
from rich.tree import Tree

from kwf.api import JobStatus, StepPhase, StepStatus
from kwf.clusterctl.shared_state import shared_state
from kwf.engine.state import format_size, json_size
from kwf.local.progress import PHASE_STYLES, duration

JSON = Any

PREVIEW = 60
STATE_KEYS_SHOWN = 20


def job_status(obj: Mapping[str, JSON]) -> JobStatus:
    """The run's status; one written by something else than kwf shows as empty."""
    try:
        return JobStatus.model_validate(obj.get("status") or {})
    except pydantic.ValidationError:
        return JobStatus()


def graph(obj: Mapping[str, JSON]) -> list[tuple[str, list[str]]]:
    """(step, dependsOn) in definition order: the spec's steps, or the snapshot
    of the Workflow the run started from, then the steps that steps added."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    steps = spec.get("steps") or (status.get("workflow") or {}).get("steps") or []
    steps = [*steps, *(status.get("addedSteps") or [])]
    return [(str(s.get("name")), list(s.get("dependsOn") or [])) for s in steps if isinstance(s, Mapping)]


def step_line(name: str, step: StepStatus | None, after: Sequence[str], now: datetime) -> Text:
    text = Text(name, style="bold")
    if step is None:
        text.append("  Pending", style="dim")
    else:
        text.append(f"  {step.phase.value}", style=PHASE_STYLES.get(step.phase, ""))
        if step.attempts > 1:
            text.append(f"  attempt {step.attempts}")
        took = duration(step, now)
        if took:
            text.append(f"  {took}")
        note = step.message if step.phase in (StepPhase.FAILED, StepPhase.WAITING) else step.output
        if note:
            text.append(f"  {_short(note)}", style="dim")
    if len(after) > 1:
        text.append(f"  (after {', '.join(after)})", style="dim")
    return text


def steps_tree(obj: Mapping[str, JSON], status: JobStatus, now: datetime) -> Tree:
    """Each step under its first dependency; more dependencies are named on its line."""
    tree = Tree(Text("steps"))
    by_name = {step.name: step for step in status.steps}
    edges = graph(obj)
    known = {name for name, _ in edges}
    for name in by_name:
        if name not in known:  # in status only (e.g. the spec could not be read)
            edges.append((name, []))
    nodes: dict[str, Tree] = {}
    placed: set[str] = set()
    # Definition order may list a step before its dependency: place in passes.
    pending = list(edges)
    while pending:
        rest = []
        for name, after in pending:
            parents = [dep for dep in after if dep in known or dep in by_name]
            parent = parents[0] if parents else None
            if parent is not None and parent not in placed:
                rest.append((name, after))
                continue
            node = (nodes[parent] if parent else tree).add(step_line(name, by_name.get(name), after, now))
            nodes[name] = node
            placed.add(name)
        if len(rest) == len(pending):  # a cycle: show the rest flat rather than loop
            for name, after in rest:
                nodes[name] = tree.add(step_line(name, by_name.get(name), after, now))
            break
        pending = rest
    return tree


def state_summary(state: Mapping[str, JSON]) -> Text:
    text = Text(f"shared state: {len(state)} key(s), {format_size(json_size(dict(state)))}")
    for key in list(state)[:STATE_KEYS_SHOWN]:
        text.append(f"\n  {key}: ")
        text.append(_short(json.dumps(state[key], ensure_ascii=False)), style="dim")
    if len(state) > STATE_KEYS_SHOWN:
        text.append(f"\n  ... {len(state) - STATE_KEYS_SHOWN} more (kwf state get)")
    return text


def describe(obj: Mapping[str, JSON], now: datetime) -> RenderableType:
    """The whole picture of a run, for a terminal or a pipe."""
    meta = obj.get("metadata") or {}
    status = job_status(obj)
    head = Text(f"run {meta.get('name')}", style="bold")
    head.append(f"  namespace {meta.get('namespace')}")
    ref = (obj.get("spec") or {}).get("workflowRef") or {}
    if ref.get("name"):
        head.append(f"  workflow {ref['name']}")
    line = Text("phase ")
    line.append(status.phase.value, style=_phase_style(status))
    line.append(f"  progress {status.progress}")
    if status.started_at is not None:
        end = status.finished_at or now
        line.append(f"  duration {_seconds((end - status.started_at).total_seconds())}")
    controls = [c for c in ("suspend", "cancel") if (obj.get("spec") or {}).get(c)]
    if controls:
        line.append(f"  ({', '.join(controls)} requested)", style="yellow")
    parts: list[RenderableType] = [head, line]
    if status.message:
        parts.append(Text(f"message {status.message}"))
    parts.append(steps_tree(obj, status, now))
    parts.append(state_summary(shared_state(obj)))
    return Group(*parts)


def _phase_style(status: JobStatus) -> str:
    return {"Succeeded": "green", "Failed": "red", "Cancelled": "red", "Running": "cyan"}.get(
        status.phase.value, ""
    )


def _seconds(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW else text[: PREVIEW - 1] + "…"
