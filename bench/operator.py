"""The operator on the real cluster, against a bare async client doing the same.

    python -m bench.operator [--quick | --smoke]      (make bench-operator)

--smoke runs every figure once at its smallest size (make test checks that
the bench still works; its figures are not worth reading).

Runs against .cluster/kubeconfig (make cluster-up: control plane and node).
It starts its own operator process (``kwf operator --inline --metrics-port``)
watching one namespace, and a bare orchestrator in another namespace that
creates the very same child Jobs (kwf's manifests) with the same client and
reacts to the same pod watch. Every figure is a ratio measured in one run:

- step period of a 10-step serial chain of pod steps (bare: create the next
  Job when the pod's container is seen terminated);
- kwf's time per step, p50/p99 from the operator's histograms, with 10 and
  100 concurrent runs (--quick: 10), beside the bare client's: child
  terminated seen -> next child Job created (kwf_schedule_latency_seconds,
  the API server's answer included) and -> the create sent, kwf's own part
  (kwf_schedule_decision_seconds), which the targets are for; the first is
  printed with its ratio to the bare client's;
- a burst of 50 single-step runs, until all are done;
- inline-step runs per minute on one replica (an inline http step each,
  against a server on 127.0.0.1 in its own process);
- API writes made by kwf, from the API server's apiserver_request_total
  (POST/PUT/PATCH/DELETE of child Jobs and runs) and the Events it posted:
  for the 10-step chain and for a 1-step run; their difference over the 9
  further steps is what each step costs (the target), the rest is per run;
- the operator's RSS, from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2

from bench.local import repo_server
from kwf.api import Step
from kwf.engine.types import Inputs, Launch
from kwf.k8s.api import (
    BATCH_JOBS,
    EVENTS,
    KWF_JOBS,
    NAMESPACES,
    PODS,
    ApiError,
    Client,
    NotFound,
    load_kubeconfig,
)
from kwf.k8s.manifests import Owner, PodOptions, child_job, child_name
from kwf.k8s.observe import termination

JSON = Any
REPO = Path(__file__).resolve().parents[1]
KUBECONFIG = REPO / ".cluster" / "kubeconfig"
METRICS_PORT = 9187
READY_LINE = "kwf operator ready"
WRITES = ("POST", "PUT", "PATCH", "DELETE")
EVENT_SETTLE_SECONDS = 1.0
STEP = {"script": {"language": "shell", "source": "true"}}


def pod_step(name: str, after: str | None = None) -> dict[str, JSON]:
    return {"name": name, **STEP, **({"dependsOn": [after]} if after else {})}


def chain(length: int) -> list[dict[str, JSON]]:
    return [pod_step(f"s{i}", f"s{i - 1}" if i > 1 else None) for i in range(1, length + 1)]


def run_body(name: str, steps: list[dict[str, JSON]]) -> dict[str, JSON]:
    meta = {"name": name}
    return {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": "Job",
        "metadata": meta,
        "spec": {"steps": steps},
    }


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else float("nan")


# ---------------------------------------------------------------- watching


class Seen:
    """What the bench's own watches saw, when: child Jobs added, pods terminated, runs done."""

    def __init__(self) -> None:
        self.job_added: dict[str, float] = {}
        self.pod_done: dict[str, float] = {}  # by Job name
        self.run_done: dict[str, float] = {}
        self.error: Exception | None = None
        self._changed = asyncio.Condition()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def follow(self, api: Client, namespace: str) -> None:
        async def jobs() -> None:
            async for event in api.list_and_watch(BATCH_JOBS, namespace):
                if event.type == "ADDED":
                    self.job_added.setdefault(event.object["metadata"]["name"], time.perf_counter())

        async def pods() -> None:
            async for event in api.list_and_watch(PODS, namespace):
                if event.type in ("ADDED", "MODIFIED") and termination(event.object) is not None:
                    job = event.object["metadata"].get("labels", {}).get("job-name", "")
                    if job not in self.pod_done:
                        self.pod_done[job] = time.perf_counter()
                        await self._notify()

        async def runs() -> None:
            async for event in api.list_and_watch(KWF_JOBS, namespace):
                phase = (event.object.get("status") or {}).get("phase")
                if event.type != "SYNCED" and phase in ("Succeeded", "Failed"):
                    name = event.object["metadata"]["name"]
                    if phase == "Failed" and self.error is None:
                        self.error = RuntimeError(
                            f"run {name} failed: {event.object['status'].get('message')}"
                        )
                    if name not in self.run_done:
                        self.run_done[name] = time.perf_counter()
                        await self._notify()

        async def again(watch: Any) -> None:
            # A watch can break (a CRD applied elsewhere reinitializes its storage): list again.
            while True:
                try:
                    await watch()
                except (ApiError, httpx2.HTTPError, OSError, ValueError):
                    await asyncio.sleep(0.5)

        await asyncio.gather(again(jobs), again(pods), again(runs))

    async def until(self, done: Any, within: float = 600.0) -> None:
        def ready() -> bool:
            if self.error is not None:
                raise self.error
            return bool(done())

        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(ready)


@contextlib.asynccontextmanager
async def namespace(api: Client, prefix: str) -> AsyncIterator[tuple[str, Seen]]:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    await api.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    seen = Seen()
    watching = asyncio.create_task(seen.follow(api, name))
    try:
        yield name, seen
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watching
        with contextlib.suppress(NotFound):
            await api.delete(NAMESPACES, name)


# ---------------------------------------------------------------- the bare client


class Bare:
    """Creates kwf's own child Jobs, each next one when the previous pod is seen terminated."""

    def __init__(self, api: Client, ns: str, seen: Seen) -> None:
        self.api, self.ns, self.seen = api, ns, seen
        self.reaction: list[float] = []  # terminated seen -> next Job created
        self.decision: list[float] = []  # terminated seen -> next create sent

    def manifest(self, run: str, step: str) -> dict[str, JSON]:
        launch = Launch(
            step=Step.model_validate(pod_step(step)),
            number=1,
            inputs=Inputs(job=run, namespace=self.ns, params={}, state={}),
        )
        job = child_job(launch, Owner(name=run, namespace=self.ns, uid=str(uuid.uuid4())), PodOptions())
        del job["metadata"]["ownerReferences"]
        return job

    async def chain(self, run: str, length: int) -> None:
        for i in range(1, length + 1):
            name = child_name(run, f"s{i}", 1)
            previous = self.seen.pod_done.get(child_name(run, f"s{i - 1}", 1))
            manifest = self.manifest(run, f"s{i}")
            if previous is not None:
                self.decision.append(time.perf_counter() - previous)
            await self.api.create(BATCH_JOBS, manifest, self.ns)
            if previous is not None:
                self.reaction.append(time.perf_counter() - previous)
            await self.seen.until(lambda name=name: name in self.seen.pod_done)


# ---------------------------------------------------------------- the operator


class Operator:
    def __init__(self, ns: str, log: Path) -> None:
        argv = [sys.executable, "-m", "kwf.cli", "operator", "--kubeconfig", str(KUBECONFIG)]
        argv += ["--namespace", ns, "--inline", "--metrics-port", str(METRICS_PORT)]
        # The inline runs' server listens on 127.0.0.1, which inline steps reach only when allowed.
        argv += ["--inline-allow-cidr", "127.0.0.1/32"]
        env = {**os.environ, "PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{REPO}"}
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)

    async def ready(self, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while READY_LINE not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the operator did not start:\n{self.log.read_text()[-3000:]}")
            await asyncio.sleep(0.1)

    def rss_mb(self) -> tuple[float, float]:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        peak = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        return rss / 1024, peak / 1024

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def histogram(name: str) -> dict[float, float]:
    """Cumulative bucket counts of a histogram on the operator's /metrics."""
    reader, writer = await asyncio.open_connection("127.0.0.1", METRICS_PORT)
    writer.write(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
    text = (await reader.read()).decode()
    writer.close()
    buckets = {}
    for match in re.finditer(rf'^{name}_bucket\{{le="([^"]+)"\}} (\S+)$', text, re.M):
        buckets[float(match.group(1))] = float(match.group(2))
    return buckets


def histogram_quantile(before: dict[float, float], after: dict[float, float], q: float) -> tuple[float, int]:
    """(the q-quantile by linear interpolation within its bucket, observations) of after - before."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0
    if not total:
        return float("nan"), 0
    rank, lower, below = q * total, 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower, int(total)
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-9), int(total)
        lower, below = bound, count
    return lower, int(total)


async def api_writes(api: Client) -> dict[tuple[str, str, str], float]:
    """apiserver_request_total of writes, by (group, resource/subresource, verb)."""
    response = await api._http.get("/metrics")
    found: dict[tuple[str, str, str], float] = defaultdict(float)
    for line in response.text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if labels.get("verb") in WRITES:
            resource = labels.get("resource", "") + (
                "/" + labels["subresource"] if labels.get("subresource") else ""
            )
            found[(labels.get("group", ""), resource, labels["verb"])] += float(line.rsplit(" ", 1)[1])
    return found


async def writes_since(
    api: Client, before: dict[tuple[str, str, str], float]
) -> dict[tuple[str, str, str], float]:
    """The writes made since ``before``, once the run's last Event has had time to go out
    (Events are posted in the background, after the status write the bench waits for)."""
    await asyncio.sleep(EVENT_SETTLE_SECONDS)
    return {k: v - before.get(k, 0.0) for k, v in (await api_writes(api)).items()}


def kwf_writes(delta: dict[tuple[str, str, str], float]) -> float:
    """kwf's writes: child Jobs (batch), its runs and their status; Events are counted apart."""
    kwf = 0.0
    for (group, resource, verb), count in delta.items():
        child = group == "batch" and resource == "jobs" and verb in ("POST", "DELETE")
        run = group == "workflow.kwf.dev" and resource.startswith("jobs") and verb != "POST"
        if child or run:
            kwf += count
    return kwf


async def kwf_events(api: Client, ns: str) -> int:
    events = await api.list(EVENTS, ns)
    return sum(1 for e in events["items"] if (e.get("source") or {}).get("component") == "kwf-operator")


# ---------------------------------------------------------------- the figures


@dataclasses.dataclass(frozen=True)
class Sizes:
    chain: int
    concurrent: tuple[tuple[int, int], ...]  # (runs, steps each)
    burst: int
    inline: int


SIZES = {
    "full": Sizes(chain=10, concurrent=((10, 5), (100, 2)), burst=50, inline=1000),
    "quick": Sizes(chain=10, concurrent=((10, 3),), burst=50, inline=300),
    "smoke": Sizes(chain=3, concurrent=((2, 2),), burst=3, inline=10),
}


async def measure(sizes: Sizes) -> list[tuple[str, str, str, str, str]]:
    rows: list[tuple[str, str, str, str, str]] = []
    async with (
        Client(load_kubeconfig(KUBECONFIG)) as api,
        namespace(api, "bench-kwf") as (kns, kseen),
        namespace(api, "bench-bare") as (bns, bseen),
    ):
        operator = Operator(kns, REPO / ".cluster" / "logs" / "bench-operator.log")
        try:
            await operator.ready()
            rows += await serial_chain(api, kns, kseen, bns, bseen, sizes.chain)
            for runs, length in sizes.concurrent:
                rows += await concurrent(api, kns, kseen, bns, bseen, runs, length)
            rows += await burst(api, kns, kseen, bns, bseen, sizes.burst)
            rows += await inline(api, kns, kseen, sizes.inline)
            rss, peak = operator.rss_mb()
            rows.append(("operator RSS (peak)", f"{rss:.0f} MB ({peak:.0f})", "-", "-", "-"))
        finally:
            operator.stop()
    return rows


def period_of(seen: Seen, run: str, length: int) -> float:
    """From the first child Job seen to the last, per step."""
    first, last = child_name(run, "s1", 1), child_name(run, f"s{length}", 1)
    return (seen.job_added[last] - seen.job_added[first]) / (length - 1)


async def kwf_chain(api: Client, kns: str, kseen: Seen, run: str, length: int) -> float:
    await api.create(KWF_JOBS, run_body(run, chain(length)), kns)
    await kseen.until(lambda: run in kseen.run_done)
    return period_of(kseen, run, length)


async def serial_chain(
    api: Client, kns: str, kseen: Seen, bns: str, bseen: Seen, length: int
) -> list[tuple[str, ...]]:
    """Two chains each, in the order bare, kwf, kwf, bare: a machine that grows
    busier or calmer along the way weighs on both alike."""
    bare = Bare(api, bns, bseen)
    await bare.chain("chain-a", length)
    bare_period = period_of(bseen, "chain-a", length)

    before = await api_writes(api)
    period = await kwf_chain(api, kns, kseen, "chain-a", length)
    delta = await writes_since(api, before)
    events = await kwf_events(api, kns)
    chain_writes = kwf_writes(delta) + events
    cluster = sum(delta.values()) / length

    period = (period + await kwf_chain(api, kns, kseen, "chain-b", length)) / 2
    await asyncio.sleep(EVENT_SETTLE_SECONDS)  # chain-b's last Event, before the 1-step run counts
    events = await kwf_events(api, kns)
    await bare.chain("chain-b", length)
    bare_period = (bare_period + period_of(bseen, "chain-b", length)) / 2

    # A one-step run: what a run costs besides its steps (its last status
    # patch, its Events); the difference is what each further step adds.
    before = await api_writes(api)
    await api.create(KWF_JOBS, run_body("single", chain(1)), kns)
    await kseen.until(lambda: "single" in kseen.run_done)
    delta = await writes_since(api, before)
    single_writes = kwf_writes(delta) + await kwf_events(api, kns) - events
    per_step = (chain_writes - single_writes) / (length - 1)
    return [
        (
            f"step period, {length}-step chain (mean of 2)",
            f"{period * 1000:.0f} ms",
            f"{bare_period * 1000:.0f} ms",
            f"{period / bare_period:.3f}x",
            "<= 1.05x",
        ),
        (
            f"API writes, {length}-step chain (kwf, per step; cluster, per step)",
            f"{chain_writes:.0f}, {chain_writes / length:.2f}; {cluster:.1f}",
            "1 create",
            "-",
            "-",
        ),
        (
            "API writes, 1-step run (kwf)",
            f"{single_writes:.0f}",
            "1 create",
            "-",
            "-",
        ),
        (
            f"API writes per step (kwf): (chain - 1-step run) / {length - 1}",
            f"{per_step:.2f}",
            "1 create",
            f"{per_step:.2f}",
            "<= 2",
        ),
    ]


async def concurrent(
    api: Client, kns: str, kseen: Seen, bns: str, bseen: Seen, runs: int, length: int
) -> list[tuple[str, ...]]:
    bare = Bare(api, bns, bseen)
    await asyncio.gather(*(bare.chain(f"c{runs}-{r}", length) for r in range(runs)))

    metrics = ("kwf_schedule_latency_seconds", "kwf_schedule_decision_seconds")
    before = {name: await histogram(name) for name in metrics}
    names = [f"c{runs}-{r}" for r in range(runs)]
    await asyncio.gather(*(api.create(KWF_JOBS, run_body(n, chain(length)), kns) for n in names))
    await kseen.until(lambda: all(n in kseen.run_done for n in names))
    after = {name: await histogram(name) for name in metrics}
    gaps = [
        kseen.job_added[child_name(n, f"s{i + 1}", 1)] - kseen.pod_done[child_name(n, f"s{i}", 1)]
        for n in names
        for i in range(1, length)
    ]
    what = f"{runs} runs x {length} steps"
    rows: list[tuple[str, ...]] = []
    for metric, label, bare_values, targets in (
        # kwf's own time, the figure with targets: the event to the create sent.
        (metrics[1], "kwf's own time per step", bare.decision, ("<= 15 ms", "<= 100 ms")),
        # The same with the API server's answer to the create, which kwf does not control.
        (metrics[0], "to the next Job created (API answer in)", bare.reaction, ("-", "-")),
    ):
        for q, target in zip((0.5, 0.99), targets, strict=True):
            value, count = histogram_quantile(before[metric], after[metric], q)
            floor = quantile(bare_values, q)
            rows.append(
                (
                    f"{label} p{q * 100:.0f}, {what}",
                    f"{value * 1000:.1f} ms (n={count})",
                    f"{floor * 1000:.1f} ms",
                    f"{value / floor:.2f}x" if target == "-" else "-",
                    target,
                )
            )
    rows.append(
        (
            f"terminated seen -> Job seen p50/p99 (the bench's watches), {what}",
            f"{quantile(gaps, 0.5) * 1000:.0f}/{quantile(gaps, 0.99) * 1000:.0f} ms",
            "-",
            "-",
            "-",
        )
    )
    return rows


async def burst(
    api: Client, kns: str, kseen: Seen, bns: str, bseen: Seen, count: int
) -> list[tuple[str, ...]]:
    """Two bursts each, in the order bare, kwf, kwf, bare (see serial_chain)."""
    bare = Bare(api, bns, bseen)

    async def bare_burst(prefix: str) -> float:
        names = [child_name(f"{prefix}{i}", "s1", 1) for i in range(count)]
        started = time.perf_counter()
        await asyncio.gather(
            *(api.create(BATCH_JOBS, bare.manifest(f"{prefix}{i}", "s1"), bns) for i in range(count))
        )
        await bseen.until(lambda: all(n in bseen.pod_done for n in names))
        return max(bseen.pod_done[n] for n in names) - started

    async def kwf_burst(prefix: str) -> float:
        runs = [f"{prefix}{i}" for i in range(count)]
        started = time.perf_counter()
        await asyncio.gather(*(api.create(KWF_JOBS, run_body(r, [pod_step("s1")]), kns) for r in runs))
        await kseen.until(lambda: all(r in kseen.run_done for r in runs))
        return max(kseen.run_done[r] for r in runs) - started

    bare_took = await bare_burst("b")
    took = await kwf_burst("b")
    took = (took + await kwf_burst("c")) / 2
    bare_took = (bare_took + await bare_burst("c")) / 2
    return [
        (
            f"burst of {count} single-step runs (mean of 2)",
            f"{took:.1f} s",
            f"{bare_took:.1f} s",
            f"{took / bare_took:.3f}x",
            "<= 1.15x",
        )
    ]


async def inline(api: Client, kns: str, kseen: Seen, count: int) -> list[tuple[str, ...]]:
    with repo_server() as url:
        step = {
            "name": "stars",
            "executor": "inline",
            "http": {"url": f"{url}/repos/nolar/kopf", "select": "body.stargazers_count"},
        }
        runs = [f"i{i}" for i in range(count)]
        gate = asyncio.Semaphore(32)

        async def create(name: str) -> None:
            async with gate:
                await api.create(KWF_JOBS, run_body(name, [step]), kns)

        before = await api_writes(api)
        events_before = await kwf_events(api, kns)
        started = time.perf_counter()
        await asyncio.gather(*(create(r) for r in runs))
        created = time.perf_counter() - started
        await kseen.until(lambda: all(r in kseen.run_done for r in runs))
        took = max(kseen.run_done[r] for r in runs) - started
        delta = await writes_since(api, before)
        writes = (kwf_writes(delta) + await kwf_events(api, kns) - events_before) / count
    per_minute = count / took * 60
    return [
        (
            f"inline runs per minute ({count} runs)",
            f"{per_minute:,.0f}",
            f"created at {count / created * 60:,.0f}/min",
            "-",
            ">= 3,000",
        ),
        ("API writes per inline run (kwf)", f"{writes:.2f}", "-", "-", "-"),
    ]


def table(rows: list[tuple[str, ...]]) -> str:
    header = ("figure", "kwf", "bare", "ratio", "target")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    mode = "smoke" if "--smoke" in args else "quick" if "--quick" in args else "full"
    if not KUBECONFIG.exists():
        sys.exit(f"no cluster: {KUBECONFIG.relative_to(REPO)} is missing (make cluster-up)")
    rows = asyncio.run(measure(SIZES[mode]))
    print(table(rows))


if __name__ == "__main__":
    main()
