"""Runs that would cost the operator too much, beside one that must not notice:
a ``when`` whose evaluation would take minutes, and outputs that would push a
run's status past what the API server stores. Against the real control plane,
with inline http steps against a server on 127.0.0.1 (allowed for this
operator only)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from kwf.k8s.api import Client
from tests.fakes import Reply, ScriptedServer
from tests.support.operator_process import OperatorProcess
from tests.support.runs import apply_run, condition, finished, get_run, run_body, step_status, wait_for

JSON = Any
#: etcd's default request limit: a status the API server stores must stay well under it.
ETCD_LIMIT = int(1.5 * 1024 * 1024)
#: 60 nested macros over 100 items: about 10^6 comparisons per level, minutes of
#: CPU if evaluated (it held the event loop for 30 s before there was a limit).
BOMB = "params.l.exists(a, params.l.exists(b, params.l.exists(c, c < 0)))"
#: Cheap when checked on small lists, costly on the list it gets.
QUADRATIC = "params.l.all(a, params.l.all(b, a + b >= 0))"


@pytest.fixture
def operator_args() -> list[str]:
    return ["--inline", "--inline-allow-cidr", "127.0.0.1/32"]


def http(name: str, url: str, when: str | None = None, **fields: JSON) -> dict[str, JSON]:
    step = {"name": name, "executor": "inline", "http": {"url": url, **fields}}
    return {**step, "when": when} if when else step


async def test_costly_when_expressions_fail_once_and_a_run_beside_them_finishes(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    with ScriptedServer({"/ok": Reply(200, {"ok": True})}) as server:
        items = list(range(100))
        await apply_run(
            api, namespace, run_body("bomb", [http("a", f"{server.url}/ok", when=BOMB)], params={"l": items})
        )
        await apply_run(
            api,
            namespace,
            run_body(
                "costly", [http("a", f"{server.url}/ok", when=QUADRATIC)], params={"l": list(range(2000))}
            ),
        )
        started = time.monotonic()
        await apply_run(api, namespace, run_body("normal", [http("a", f"{server.url}/ok", select="body.ok")]))
        normal = await finished(api, namespace, "normal", within=60)
        took = time.monotonic() - started
        bomb = await wait_for(
            lambda: get_run(api, namespace, "bomb"),
            lambda run: (condition(run, "Stalled") or {}).get("status") == "True",
            within=60,
            what="the bomb's run Stalled",
        )
        costly = await finished(api, namespace, "costly", within=60)
        assert server.hits("/ok") == 1  # neither expensive step ran
    assert normal["status"]["phase"] == "Succeeded", normal["status"]
    assert took < 30, f"a normal run beside the costly ones took {took:.1f}s"

    # Too costly whatever the values: the spec is invalid, as a cycle would be;
    # no step starts, and the condition names the step and its when.
    assert step_status(bomb, "a").get("attempts", 0) == 0
    assert "step a: when" in (condition(bomb, "Stalled") or {}).get("message", ""), bomb["status"]
    # Costly only with the values it got: the step fails once, with the figures.
    assert costly["status"]["phase"] == "Failed", costly["status"]
    message = step_status(costly, "a")["message"]
    assert "when" in message and "over the limit" in message, message

    # Once: the failure is recorded, and no later pass evaluates it again or writes anything.
    versions = {
        name: (await get_run(api, namespace, name))["metadata"]["resourceVersion"]
        for name in ("bomb", "costly")
    }
    await asyncio.sleep(6)
    for name, version in versions.items():
        assert (await get_run(api, namespace, name))["metadata"]["resourceVersion"] == version, name


async def test_outputs_past_the_status_budget_never_wedge_the_run(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    """60 outputs of 24 KiB (each under the 32 KiB an output may keep): 1.4 MiB,
    over what the API server stores beside the rest of the run. The run
    succeeds, its status stays under the budget, and the outputs that did not
    fit are kept as previews that say so."""
    big = {"blob": "x" * (24 * 1024)}
    count = 60
    with ScriptedServer({"/big": Reply(200, big)}) as server:
        steps = [http(f"s{i}", f"{server.url}/big", select="body") for i in range(count)]
        await apply_run(api, namespace, run_body("large", steps, parallelism=8))
        run = await finished(api, namespace, "large", within=120)
        assert server.hits("/big") == count
    assert run["status"]["phase"] == "Succeeded", run["status"].get("message")
    size = len(json.dumps(run["status"]))
    assert size < ETCD_LIMIT * 0.75, f"status of {size:,} bytes"
    outputs = run["status"]["outputs"]
    whole = [name for name, value in outputs.items() if value == big]
    previews = [step_status(run, f"s{i}") for i in range(count) if outputs.get(f"s{i}") != big]
    assert whole and previews, f"{len(whole)} outputs whole, {len(previews)} not"
    for entry in previews:
        assert entry["phase"] == "Succeeded"
        assert "kept as a preview" in entry["message"] or "not kept" in entry["message"], entry
