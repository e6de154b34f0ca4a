"""Killing the operator at random points loses nothing and does nothing twice.

20 runs, each a chain of three steps that add one to a counter, execute while
the operator is SIGKILLed at least 30 times. Afterwards every run has
finished, every step ran exactly one attempt (one child Job each, named for
attempt 1), and every counter is exactly 3: a state patch applied twice would
show as 4 or more, a lost one as 2 or less.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import pytest

from kwf.k8s.api import BATCH_JOBS, KWF_JOBS, Client
from tests.support.operator_process import OperatorProcess
from tests.support.runs import apply_run, is_finished, run_body, script, step_status, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

RUNS = 20
KILLS = 30
STEPS = ("a", "b", "c")
INCREMENT = """
import json, os
state = json.load(open(os.environ["KWF_STATE"]))
json.dump({"state": {"counter": state["counter"] + 1}}, open(os.environ["KWF_RESULT"], "w"))
"""


def chain(name: str) -> dict[str, object]:
    steps = [script(step, INCREMENT, dependsOn=[STEPS[i - 1]] if i else []) for i, step in enumerate(STEPS)]
    return run_body(name, steps, initialState={"counter": 0})


async def test_random_kills_lose_and_duplicate_nothing(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    # A new seed each session explores new kill points; KWF_KILL_SEED replays one.
    seed = int(os.environ.get("KWF_KILL_SEED") or random.SystemRandom().randrange(2**32))
    print(f"kill points from seed {seed} (KWF_KILL_SEED={seed} to replay them)")
    chooser = random.Random(seed)
    names = [f"chain-{i:02d}" for i in range(RUNS)]
    started = time.monotonic()
    for name in names:
        await apply_run(api, namespace, chain(name))

    for _ in range(KILLS):
        # Kill at a random point of its work: while it lists, launches, or patches status.
        await asyncio.sleep(chooser.uniform(0.0, 1.2))
        operator.kill()
        await asyncio.to_thread(operator.start, wait_ready=chooser.random() < 0.7)
    killed = time.monotonic() - started
    if not operator.running:
        operator.start()
    else:
        await asyncio.to_thread(operator.wait_ready)

    async def all_runs() -> list[dict[str, object]]:
        listing = await api.list(KWF_JOBS, namespace)
        return [item for item in listing["items"] if item["metadata"]["name"] in names]

    runs = await wait_for(
        all_runs,
        lambda items: len(items) == RUNS and all(is_finished(r) for r in items),
        within=600,
        interval=1.0,
        what=f"every run finished (seed {seed})",
    )
    print(f"{KILLS} kills in {killed:.0f} s; all finished after {time.monotonic() - started:.0f} s")
    jobs = await api.list(BATCH_JOBS, namespace, label_selector="app.kubernetes.io/managed-by=kwf")
    launched = sorted(job["metadata"]["name"] for job in jobs["items"])
    assert launched == sorted(f"{name}-{step}-1" for name in names for step in STEPS), seed
    for run in runs:
        status = run["status"]
        assert status["phase"] == "Succeeded", (seed, status)
        assert status["sharedState"] == {"counter": 3}, (run["metadata"]["name"], status["sharedState"])
        for step in STEPS:
            assert step_status(run, step)["attempts"] == 1
    assert operator.starts >= KILLS + 1
