"""Two operator processes with --leader-election against the real control
plane: one leads, the other starts nothing; killed, the leader is replaced
once its Lease runs out, and the new leader goes on reconciling. No node:
child Jobs get created, their pods never run."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest

from kwf.k8s.api import Client
from kwf.operator.leader import LEASES
from tests.support.operator_process import READY_LINE, OperatorProcess
from tests.support.runs import apply_run, children, run_body, script, wait_for

SLEEP = "import time; time.sleep(3600)"
LEASE = "kwf-test"
LEASE_SECONDS = 15  # the operator's default
LAUNCHED = re.compile(r"^kwf_step_attempts_launched_total ([0-9.]+)$", re.MULTILINE)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Replica:
    """One operator process, named by its POD_NAME, with its own metrics port."""

    def __init__(self, name: str, kubeconfig: Path, namespace: str, folder: Path) -> None:
        self.name = name
        self.metrics_port = free_port()
        self.process = OperatorProcess(
            kubeconfig,
            folder / f"{name}.log",
            namespaces=[namespace],
            extra_args=[
                "--leader-election",
                f"--leader-election-namespace={namespace}",
                f"--leader-election-name={LEASE}",
                f"--metrics-port={self.metrics_port}",
            ],
            env={"POD_NAME": name},
        )

    def log(self) -> str:
        return self.process.log()

    async def launched(self) -> float:
        """Child Jobs this process created itself (its own counter)."""
        async with httpx2.AsyncClient(trust_env=False) as http:
            response = await http.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10)
        found = LAUNCHED.search(response.text)
        return float(found.group(1)) if found else 0.0


@pytest.fixture
def replicas(kubeconfig: Path, namespace: str, tmp_path: Path) -> Iterator[list[Replica]]:
    both = [Replica(name, kubeconfig, namespace, tmp_path) for name in ("replica-a", "replica-b")]
    try:
        yield both
    finally:
        for replica in both:
            replica.process.stop()
            print(f"----- {replica.name} ({replica.process.log_file}) -----\n{replica.process.tail(120)}")


async def lease(api: Client, namespace: str) -> dict[str, Any]:
    return await api.get(LEASES, LEASE, namespace)


def holder(body: dict[str, Any]) -> str:
    return str(body["spec"].get("holderIdentity") or "")


def moment(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_one_replica_leads_and_the_standby_takes_over_when_it_is_killed(
    api: Client, namespace: str, replicas: list[Replica]
) -> None:
    for replica in replicas:
        replica.process.start(wait_ready=False)
    current = await wait_for(
        lambda: lease(api, namespace), lambda body: holder(body) != "", within=120, what="a Lease holder"
    )
    (leader,) = [r for r in replicas if r.name == holder(current)]
    (standby,) = [r for r in replicas if r is not leader]
    leader.process.wait_ready(timeout=120)
    await wait_for(
        lambda: read_log(standby),
        lambda log: f"held by {leader.name}; standing by" in log,
        within=120,
        what="the standby standing by",
    )
    assert f"leading as {leader.name}" in leader.log()
    assert "leading as" not in standby.log()

    await apply_run(api, namespace, run_body("before", [script("a", SLEEP)]))
    (job,) = await wait_for(
        lambda: children(api, namespace, "before"), lambda jobs: len(jobs) == 1, what="the first child Job"
    )
    assert job["metadata"]["name"] == "before-a-1"
    await wait_for(leader.launched, lambda n: n == 1, what="the leader counting its launch")
    # The standby started nothing: no kopf, no watches, no launch of its own.
    assert await standby.launched() == 0
    assert READY_LINE not in standby.log() and " kopf." not in standby.log()

    leader.process.kill()
    last = await lease(api, namespace)  # the dead leader's last renewal
    assert holder(last) == leader.name
    taken = await wait_for(
        lambda: lease(api, namespace),
        lambda body: holder(body) == standby.name,
        within=LEASE_SECONDS + 60,
        what="the standby holding the Lease",
    )
    expired = moment(last["spec"]["renewTime"]) + timedelta(seconds=last["spec"]["leaseDurationSeconds"])
    assert moment(taken["spec"]["acquireTime"]) >= expired, "taken over before the term ended"
    assert taken["spec"]["leaseTransitions"] == last["spec"]["leaseTransitions"] + 1
    standby.process.wait_ready(timeout=120)

    await apply_run(api, namespace, run_body("after", [script("a", SLEEP)]))
    (job,) = await wait_for(
        lambda: children(api, namespace, "after"), lambda jobs: len(jobs) == 1, what="the second child Job"
    )
    assert job["metadata"]["name"] == "after-a-1"
    # The new leader launched the second run's step and adopted the first one's.
    await wait_for(standby.launched, lambda n: n == 1, what="the new leader counting its launch")
    assert [j["metadata"]["name"] for j in await children(api, namespace, "before")] == ["before-a-1"]

    standby.process.stop()
    assert standby.process.returncode == 0
    assert holder(await lease(api, namespace)) == "", "a clean stop hands the Lease back"


async def test_a_leader_that_finds_another_holder_stops_and_exits_with_an_error(
    api: Client, namespace: str, replicas: list[Replica]
) -> None:
    replica = replicas[0]
    replica.process.start(wait_ready=True, timeout=120)
    current = await lease(api, namespace)
    assert holder(current) == replica.name
    # Another writer took the Lease (as after a partition): a live term not ours.
    spec = {
        **current["spec"],
        "holderIdentity": "someone-else",
        "renewTime": current["spec"]["renewTime"],
        "leaseDurationSeconds": 3600,
    }
    await api.replace(LEASES, LEASE, {**current, "spec": spec}, namespace)
    await wait_for(
        _returncode(replica.process), lambda code: code is not None, within=120, what="the leader exiting"
    )
    assert replica.process.returncode == 1
    assert "lost the lead" in replica.log() and "someone-else holds it now" in replica.log()
    assert holder(await lease(api, namespace)) == "someone-else", "a lost Lease is not handed back"


async def read_log(replica: Replica) -> str:
    return replica.log()


def _returncode(process: OperatorProcess) -> Any:
    async def read() -> int | None:
        return process.returncode

    return read
