"""The bytes a run's status may hold, shared by its parts.

A status the API server refuses wedges a run: every write fails and the run
is retried forever. So plan() keeps the whole of it within
``Limits.status_bytes``: the shared state counts at its own limit (it may
always grow to it), each step entry at its most (messages and previews are
cut to a share that shrinks as the run grows), and outputs and added steps
take what is left, measured only on a pass that would add some.
"""

from __future__ import annotations

from collections.abc import Callable

from kwf.engine.progress import MESSAGE_LIMIT
from kwf.engine.types import Limits

#: A step entry without its message and output preview, at most (names, job,
#: times, counts: 360), and the note that stands for an output not kept (140).
ENTRY_BYTES = 500
#: The run's message, conditions and counts.
RESERVE = 16 * 1024


class StatusBudget:
    """One pass's account of its status."""

    def __init__(self, limits: Limits, entries: int) -> None:
        """``entries``: the step entries the run may come to hold."""
        entries = max(entries, 1)
        self.limits = limits
        #: The entries' messages share an eighth of the status; their previews a sixteenth.
        self.message_bytes = max(128, min(MESSAGE_LIMIT, limits.status_bytes // 8 // entries))
        self.preview_bytes = min(limits.output_preview, max(32, limits.status_bytes // 16 // entries))
        self._used: int | None = None

    @property
    def entry_bytes(self) -> int:
        return ENTRY_BYTES + self.message_bytes + self.preview_bytes

    def room(self, measure: Callable[[], int], entries: int) -> int:
        """The bytes left. ``measure`` gives the outputs, added steps and anything
        else plan() does not bound; it is called once, on the first need."""
        if self._used is None:
            self._used = RESERVE + self.limits.state_bytes + entries * self.entry_bytes + measure()
        return self.limits.status_bytes - self._used

    def take(self, size: int) -> None:
        if self._used is not None:
            self._used += size
