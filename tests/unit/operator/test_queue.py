"""The per-run work queue: one reconcile at a time per run, events coalesce."""

from __future__ import annotations

import asyncio

from kwf.operator.queue import WorkQueue


async def test_events_during_a_reconcile_coalesce_into_one_more() -> None:
    calls: list[str] = []
    gate = asyncio.Event()

    async def worker(key: str) -> None:
        calls.append(key)
        if len(calls) == 1:
            await gate.wait()

    queue: WorkQueue[str] = WorkQueue(worker)
    queue.add("a")
    await asyncio.sleep(0)
    for _ in range(10):
        queue.add("a")  # while the first reconcile runs
    gate.set()
    await queue.idle()
    assert calls == ["a", "a"]


async def test_one_run_never_reconciles_concurrently_but_runs_do() -> None:
    active: dict[str, int] = {"a": 0, "b": 0}
    peak: dict[str, int] = {"a": 0, "b": 0}
    both = asyncio.Event()

    async def worker(key: str) -> None:
        active[key] += 1
        peak[key] = max(peak[key], active[key])
        if active["a"] and active["b"]:
            both.set()
        await asyncio.sleep(0.01)
        active[key] -= 1

    queue: WorkQueue[str] = WorkQueue(worker)
    for _ in range(5):
        queue.add("a")
        queue.add("b")
    await asyncio.wait_for(both.wait(), 5)
    await queue.idle()
    assert peak == {"a": 1, "b": 1}


async def test_only_the_earliest_timer_is_kept() -> None:
    calls: list[float] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    called = asyncio.Event()

    async def worker(key: str) -> None:
        calls.append(loop.time() - start)
        called.set()

    queue: WorkQueue[str] = WorkQueue(worker)
    queue.add_after("a", 30)
    queue.add_after("a", 0.05)
    queue.add_after("a", 10)
    await asyncio.wait_for(called.wait(), 5)
    await queue.close()
    assert len(calls) == 1 and calls[0] < 5


async def test_a_failing_reconcile_is_tried_again_later() -> None:
    calls = 0

    async def worker(key: str) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    queue: WorkQueue[str] = WorkQueue(worker)
    queue.add("a")
    await queue.idle()
    assert calls == 1
    assert "a" in queue._timers  # a retry is due, not a tight loop
    await queue.close()
