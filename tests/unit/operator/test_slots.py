"""Inline slots, shared between namespaces in turn."""

from __future__ import annotations

import asyncio

import pytest

from kwf.operator.slots import FairSlots


async def test_a_freed_slot_goes_to_the_next_namespace_in_turn() -> None:
    slots = FairSlots(1)
    granted: list[str] = []
    release = asyncio.Event()

    async def attempt(namespace: str, label: str) -> None:
        async with slots.slot(namespace):
            granted.append(label)
            await release.wait()

    tasks = [asyncio.create_task(attempt("busy", "busy-0"))]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(attempt("busy", f"busy-{n}")) for n in range(1, 6)]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(attempt("quiet", "quiet-0"))]
    await asyncio.sleep(0)
    assert (slots.waiting("busy"), slots.waiting("quiet")) == (5, 1)
    release.set()
    await asyncio.gather(*tasks)
    assert granted == ["busy-0", "busy-1", "quiet-0", "busy-2", "busy-3", "busy-4", "busy-5"]
    assert slots.waiting() == 0


async def test_a_cancelled_waiter_loses_no_slot() -> None:
    slots = FairSlots(1)
    holding = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with slots.slot("a"):
            holding.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await holding.wait()
    waiter = asyncio.create_task(slots.slot("b").__aenter__())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await holder
    async with asyncio.timeout(1), slots.slot("c"):  # the slot came back
        assert slots.waiting() == 0


def test_at_least_one_slot() -> None:
    with pytest.raises(ValueError, match="--inline-concurrency must be at least 1, not 0"):
        FairSlots(0)
