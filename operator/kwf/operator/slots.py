"""Inline slots shared fairly between namespaces.

At most ``size`` inline attempts talk to the outside at once. When all slots
are taken, each namespace waits in its own queue, and a freed slot goes to the
next namespace in turn (round-robin), not to the oldest waiter: a namespace
with a thousand attempts queued delays another namespace's next attempt by at
most one slot's turn, not by its thousand.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator


class FairSlots:
    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"--inline-concurrency must be at least 1, not {size}")
        self.size = size
        self._free = size
        # namespace -> its waiters; the dict's order is the turn order.
        self._queues: dict[str, collections.deque[asyncio.Future[None]]] = {}

    @contextlib.asynccontextmanager
    async def slot(self, namespace: str) -> AsyncIterator[None]:
        """Hold one slot for the body; waits for the namespace's turn if none is free."""
        await self._acquire(namespace)
        try:
            yield
        finally:
            self._release()

    def waiting(self, namespace: str | None = None) -> int:
        if namespace is not None:
            return len(self._queues.get(namespace, ()))
        return sum(len(queue) for queue in self._queues.values())

    async def _acquire(self, namespace: str) -> None:
        if self._free > 0 and not self._queues:
            self._free -= 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(namespace, collections.deque()).append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # handed a slot just as it was cancelled: pass it on
            else:
                self._forget(namespace, granted)
            raise

    def _release(self) -> None:
        while self._queues:
            namespace = next(iter(self._queues))
            queue = self._queues.pop(namespace)
            granted = queue.popleft()
            if queue:
                self._queues[namespace] = queue  # to the back of the turn order
            if not granted.done():
                granted.set_result(None)
                return
        self._free += 1

    def _forget(self, namespace: str, granted: asyncio.Future[None]) -> None:
        queue = self._queues.get(namespace)
        if queue is None:
            return
        with contextlib.suppress(ValueError):
            queue.remove(granted)
        if not queue:
            del self._queues[namespace]
