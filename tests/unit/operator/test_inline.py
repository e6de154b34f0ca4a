"""The inline executor: steps with executor: inline run in the operator process,
against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from kwf.api import JobSpec, JobStatus, Step, StepPhase, StepStatus
from kwf.engine.plan import plan
from kwf.engine.types import Attempt, AttemptPhase, Inputs, Launch, Stop
from kwf.k8s.api import NotFound
from kwf.k8s.index import RunKey
from kwf.k8s.manifests import Owner
from kwf.operator.inline import LOST_MESSAGE, InlineRunner, SecretCache, lost_attempts
from kwf.steps import StepError
from tests.fakes import FakeGitHub, FakeOpenAI, FakeServer, Reply, Request

NOW = datetime(2025, 1, 1, tzinfo=UTC)
OWNER = Owner(name="run", namespace="ns", uid="uid-1")
INPUTS = Inputs(job="run", namespace="ns", params={}, state={})
KEY = "sk-unit-secret-4711"


def http_step(url: str, **fields: Any) -> Step:
    return Step.model_validate({"name": "stars", "executor": "inline", "http": {"url": url}, **fields})


class Woken:
    """Collects the runs the runner wakes, and lets a test wait for the n-th."""

    def __init__(self) -> None:
        self.keys: list[RunKey] = []
        self._changed = asyncio.Event()

    def __call__(self, key: RunKey) -> None:
        self.keys.append(key)
        self._changed.set()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(30):
            while len(self.keys) < count:
                self._changed.clear()
                await self._changed.wait()


def one(runner: InlineRunner, step: str, spec: JobSpec | None = None) -> Attempt:
    observed = runner.observe(OWNER.uid, spec or JobSpec(), JobStatus(), {})
    (attempt,) = observed[step]
    return attempt


async def test_an_http_step_runs_here_and_wakes_its_run() -> None:
    woken = Woken()
    runner = InlineRunner(woken, enabled=True)
    async with FakeGitHub() as github:
        url = f"{github.url}/repos/nolar/kopf"
        step = http_step(url, http={"url": url, "select": "body.stargazers_count"})
        assert runner.launch(OWNER, Launch(step=step, number=1, inputs=INPUTS))
        assert one(runner, "stars").phase is AttemptPhase.RUNNING
        await woken.until(1)
        attempt = one(runner, "stars")
    await runner.close()
    assert woken.keys == [RunKey("ns", "run")]
    assert attempt.phase is AttemptPhase.SUCCEEDED
    assert attempt.result is not None and attempt.result.output == 2400
    assert attempt.number == 1 and attempt.started_at is not None and attempt.finished_at is not None


async def test_a_launch_seen_twice_starts_one_attempt() -> None:
    woken = Woken()
    runner = InlineRunner(woken, enabled=True)
    async with FakeGitHub() as github:
        launch = Launch(step=http_step(f"{github.url}/repos/nolar/kopf"), number=1, inputs=INPUTS)
        assert runner.launch(OWNER, launch) and runner.launch(OWNER, launch)
        await woken.until(1)
        await runner.close()
        assert len(github.requests) == 1


async def test_a_failing_answer_fails_the_attempt_with_the_step_message() -> None:
    woken = Woken()
    runner = InlineRunner(woken, enabled=True)
    async with FakeGitHub() as github:
        runner.launch(OWNER, Launch(step=http_step(f"{github.url}/repos/no/such"), number=1, inputs=INPUTS))
        await woken.until(1)
    await runner.close()
    attempt = one(runner, "stars")
    assert attempt.phase is AttemptPhase.FAILED
    assert attempt.message is not None and "404" in attempt.message


class Gate(FakeServer):
    """Holds every request until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def handle(self, request: Request) -> Reply:
        self.release.wait(30)
        return Reply(200, {"ok": True})


async def test_attempts_beyond_the_concurrency_wait_for_a_slot() -> None:
    woken = Woken()
    runner = InlineRunner(woken, enabled=True, concurrency=1)
    async with Gate() as gate:
        for number in (1, 2):
            runner.launch(OWNER, Launch(step=http_step(gate.url), number=number, inputs=INPUTS))
        async with asyncio.timeout(30):
            while not gate.requests:  # noqa: ASYNC110  (the server runs in a thread)
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # room for a second request, were the bound broken
        assert len(gate.requests) == 1
        assert runner.running == 2  # the waiting one counts as running
        gate.release.set()
        await woken.until(2)
        await runner.close()
        assert len(gate.requests) == 2


async def test_a_stopped_attempt_fails_with_the_reason() -> None:
    woken = Woken()
    runner = InlineRunner(woken, enabled=True)
    async with Gate() as gate:
        runner.launch(OWNER, Launch(step=http_step(gate.url), number=1, inputs=INPUTS))
        assert await runner.stop(OWNER, Stop(step="stars", number=1, reason="cancelled"))
        assert not await runner.stop(OWNER, Stop(step="other", number=1, reason="cancelled"))
        gate.release.set()
        await runner.close()
    attempt = one(runner, "stars")
    assert attempt.phase is AttemptPhase.FAILED and attempt.message == "stopped: cancelled"


async def test_settle_says_whether_the_attempts_ended_in_time() -> None:
    runner = InlineRunner(Woken(), enabled=True)
    async with Gate() as gate:
        runner.launch(OWNER, Launch(step=http_step(gate.url), number=1, inputs=INPUTS))
        assert not await runner.settle(OWNER.uid, [("stars", 1)], within=0.2)  # held by the server
        assert not await runner.settle(OWNER.uid, [("other", 1)], within=0.2)  # not an attempt here
        gate.release.set()
        assert await runner.settle(OWNER.uid, [("stars", 1)], within=30)
        await runner.close()
    assert one(runner, "stars").phase is AttemptPhase.SUCCEEDED


async def test_an_llm_step_gets_its_key_from_the_secret_and_never_shows_it() -> None:
    fetched: list[tuple[str, str]] = []

    async def fetch(namespace: str, name: str) -> dict[str, bytes]:
        fetched.append((namespace, name))
        return {"api-key": KEY.encode()}

    woken = Woken()
    runner = InlineRunner(woken, enabled=True, secrets=SecretCache(fetch))
    async with (
        FakeOpenAI(api_key=KEY, quote_key=True) as good,
        FakeOpenAI(api_key="other", quote_key=True) as bad,
    ):
        for number, server in ((1, good), (2, bad)):
            step = Step.model_validate(
                {
                    "name": "ask",
                    "executor": "inline",
                    "llm": {
                        "baseURL": server.base_url,
                        "model": "m",
                        "prompt": "two words",
                        "apiKeySecretRef": {"name": "openai", "key": "api-key"},
                    },
                }
            )
            runner.launch(OWNER, Launch(step=step, number=number, inputs=INPUTS))
            await woken.until(number)
    await runner.close()
    observed = runner.observe(OWNER.uid, JobSpec(), JobStatus(), {})
    first, second = sorted(observed["ask"], key=lambda a: a.number)
    assert first.phase is AttemptPhase.SUCCEEDED
    assert first.result is not None and first.result.output == "Answer: two words"
    assert first.result.usage["m"].total_tokens == 5  # "two words" + "Answer: two words"
    assert second.phase is AttemptPhase.FAILED
    assert second.message is not None and "401" in second.message and KEY not in second.message
    assert fetched == [("ns", "openai")]  # the second read came from the cache


async def test_secrets_are_read_again_after_their_time() -> None:
    reads = 0
    clock = [0.0]

    async def fetch(namespace: str, name: str) -> dict[str, bytes]:
        nonlocal reads
        reads += 1
        if name == "gone":
            raise NotFound(404, "NotFound", "secrets gone not found")
        return {"k": f"v{reads}".encode()}

    cache = SecretCache(fetch, ttl=30, clock=lambda: clock[0])
    assert await cache.value("ns", "s", "k", field="f") == "v1"
    clock[0] = 29.0
    assert await cache.value("ns", "s", "k", field="f") == "v1"
    clock[0] = 30.0
    assert await cache.value("ns", "s", "k", field="f") == "v2"
    with pytest.raises(StepError, match=r"llm\.apiKeySecretRef: Secret 'gone' not found in namespace ns"):
        await cache.value("ns", "gone", "k", field="llm.apiKeySecretRef")
    with pytest.raises(StepError, match="Secret 's' has no key 'missing'"):
        await cache.value("ns", "s", "missing", field="f")


async def test_without_inline_steps_go_to_pods_and_the_run_is_told_once() -> None:
    runner = InlineRunner(Woken(), enabled=False)
    step = http_step("http://127.0.0.1:1/")
    assert not runner.launch(OWNER, Launch(step=step, number=1, inputs=INPUTS))
    assert not runner.launch(OWNER, Launch(step=step, number=2, inputs=INPUTS))
    pod_step = Step.model_validate({"name": "p", "http": {"url": "http://127.0.0.1:1/"}})
    enabled = InlineRunner(Woken(), enabled=True)
    assert not enabled.launch(OWNER, Launch(step=pod_step, number=1, inputs=INPUTS))
    assert runner.observe(OWNER.uid, JobSpec(), JobStatus(), {}) == {}


# ------------------------------------------------------------- restarts


def spec_of(*steps: dict[str, Any]) -> JobSpec:
    return JobSpec.model_validate({"steps": list(steps)})


INLINE = {"name": "a", "executor": "inline", "http": {"url": "http://127.0.0.1:1/"}}
POD = {"name": "b", "http": {"url": "http://127.0.0.1:1/"}}


def running(name: str, number: int) -> StepStatus:
    return StepStatus(name=name, phase=StepPhase.RUNNING, attempts=1, last_attempt=number, started_at=NOW)


def test_a_running_inline_attempt_nobody_knows_is_lost() -> None:
    status = JobStatus(steps=[running("a", 1), running("b", 1)])
    lost = lost_attempts(spec_of(INLINE, POD), status, {}, (), NOW)
    assert list(lost) == ["a"]  # a pod step not seen yet is a launch in flight, not a loss
    assert lost["a"].phase is AttemptPhase.LOST and lost["a"].number == 1
    assert lost["a"].message == LOST_MESSAGE


def test_an_inline_attempt_known_here_or_as_a_pod_is_not_lost() -> None:
    status = JobStatus(steps=[running("a", 2)])
    assert lost_attempts(spec_of(INLINE), status, {}, [("a", 2)], NOW) == {}
    in_pod = {"a": [Attempt(step="a", number=2, phase=AttemptPhase.RUNNING)]}
    assert lost_attempts(spec_of(INLINE), status, in_pod, (), NOW) == {}
    done = JobStatus(steps=[StepStatus(name="a", phase=StepPhase.SUCCEEDED, attempts=1, last_attempt=2)])
    assert lost_attempts(spec_of(INLINE), done, {}, (), NOW) == {}


def test_added_inline_steps_are_inline_too() -> None:
    status = JobStatus(steps=[running("c", 1)], added_steps=[{**INLINE, "name": "c"}])
    assert list(lost_attempts(spec_of(POD), status, {}, (), NOW)) == ["c"]


def test_a_lost_inline_attempt_is_launched_again_without_spending_a_retry() -> None:
    spec = spec_of({**INLINE, "retry": {"limit": 0}})
    status = JobStatus(steps=[running("a", 1)])
    runner = InlineRunner(Woken(), enabled=True, clock=lambda: NOW)
    decision = plan(spec, status, runner.observe("uid-1", spec, status, {}), NOW)
    (launch,) = decision.actions
    assert isinstance(launch, Launch) and launch.number == 2
    (entry,) = decision.status.steps
    assert (entry.phase, entry.attempts, entry.infra_retries) == (StepPhase.RUNNING, 1, 1)
