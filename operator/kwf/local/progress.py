"""How a local run shows itself: a live table on a terminal, lines otherwise,
and the final status as JSON for scripts."""

from __future__ import annotations

from datetime import datetime
from typing import IO, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kwf.api import JobStatus, StepPhase, StepStatus

#: rich styles of the step phases, for `kwf run` and `kwf get` alike.
PHASE_STYLES = {
    StepPhase.PENDING: "dim",
    StepPhase.WAITING: "yellow",
    StepPhase.RUNNING: "cyan",
    StepPhase.SUCCEEDED: "green",
    StepPhase.FAILED: "red",
    StepPhase.SKIPPED: "dim",
    StepPhase.RECOVERED: "magenta",
    StepPhase.CANCELLED: "red",
}


def status_json(status: JobStatus) -> dict[str, Any]:
    """The final status as ``kwf run -o json`` prints it: the wire form, with
    ``sharedState``, ``outputs`` and ``usage`` always present."""
    data = status.dump()
    data.setdefault("sharedState", {})
    data.setdefault("outputs", {})
    data.setdefault("usage", {})
    return data


def duration(step: StepStatus, now: datetime) -> str:
    if step.started_at is None:
        return ""
    end = step.finished_at or now
    seconds = max((end - step.started_at).total_seconds(), 0.0)
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


class LineProgress:
    """One line per change of a step's phase or attempt: for logs and pipes."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._seen: dict[str, tuple[StepPhase, int]] = {}
        self._phase: str | None = None

    def __call__(self, status: JobStatus) -> None:
        for step in status.steps:
            now = (step.phase, step.attempts)
            if self._seen.get(step.name, (StepPhase.PENDING, 0)) == now:
                continue  # unchanged, or still waiting for its turn
            self._seen[step.name] = now
            line = f"{step.name}: {step.phase.value}"
            if step.attempts > 1 or step.phase is StepPhase.WAITING:
                line += f" (attempt {step.attempts})"
            if step.phase.finished and step.message:
                line += f": {step.message}"
            print(line, file=self._stream, flush=True)
        if status.phase.finished and self._phase != status.phase.value:
            self._phase = status.phase.value
            print(_summary(status), file=self._stream, flush=True)

    def close(self) -> None:
        pass


class LiveProgress:
    """A table of the steps, redrawn in place as the run goes on."""

    def __init__(self, console: Console, now: Any) -> None:
        self._console = console
        self._now = now
        self._status = JobStatus()
        # get_renderable: each refresh redraws, so durations of running steps tick.
        self._live = Live(console=console, get_renderable=self._render, refresh_per_second=4)
        self._live.start()

    def __call__(self, status: JobStatus) -> None:
        self._status = status
        self._live.refresh()

    def close(self) -> None:
        self._live.stop()
        if self._status.phase.finished:
            self._console.print(_summary(self._status))

    def _render(self) -> Table:
        status = self._status
        table = Table(title=f"{status.phase.value}  {status.progress}", title_justify="left")
        table.add_column("step")
        table.add_column("phase")
        table.add_column("attempts", justify="right")
        table.add_column("duration", justify="right")
        table.add_column("output / message", overflow="ellipsis", no_wrap=True, max_width=60)
        now = self._now()
        for step in status.steps:
            note = step.message if step.phase in (StepPhase.FAILED, StepPhase.WAITING) else step.output
            table.add_row(
                step.name,
                Text(step.phase.value, style=PHASE_STYLES.get(step.phase, "")),
                str(step.attempts),
                duration(step, now),
                note or "",
            )
        return table


def _summary(status: JobStatus) -> str:
    text = f"run {status.phase.value.lower()} ({status.progress} steps)"
    return f"{text}: {status.message}" if status.message else text
