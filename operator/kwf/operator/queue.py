"""A work queue with one worker per run: events coalesce, nothing runs twice at once.

Any number of events for a run while its reconcile is running leave one
"again" mark, so the run is reconciled once more afterwards with everything
that happened — level-based, like controller-runtime's queue. Delayed work
(a retry's backoff, a timeout, the periodic resync) keeps only the earliest
timer per run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

logger = logging.getLogger(__name__)


class WorkQueue(Generic[K]):
    def __init__(self, worker: Callable[[K], Awaitable[None]], *, concurrency: int = 32) -> None:
        self._worker = worker
        self._slots = asyncio.Semaphore(concurrency)
        self._running: dict[K, asyncio.Task[None]] = {}
        self._again: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()

    def add(self, key: K) -> None:
        """Reconcile ``key`` as soon as possible (once more if it is running now)."""
        if self._closed:
            return
        if key in self._running:
            self._again.add(key)
            return
        self._idle.clear()
        self._running[key] = asyncio.get_running_loop().create_task(self._run(key), name=f"reconcile {key}")

    def add_after(self, key: K, delay: float) -> None:
        """Reconcile ``key`` in ``delay`` seconds, unless an earlier timer is set."""
        if self._closed:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        timer = self._timers.get(key)
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def forget(self, key: K) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._again.discard(key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def _run(self, key: K) -> None:
        try:
            while True:
                self._again.discard(key)
                async with self._slots:
                    try:
                        await self._worker(key)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        logger.exception("reconcile of %s failed; trying again in 5 s", key)
                        self.add_after(key, 5.0)
                if key not in self._again or self._closed:
                    break
        finally:
            self._running.pop(key, None)
            if not self._running:
                self._idle.set()

    async def idle(self) -> None:
        """Wait until no reconcile runs (timers may still be set)."""
        await self._idle.wait()

    @property
    def busy(self) -> int:
        return len(self._running)

    async def close(self) -> None:
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
