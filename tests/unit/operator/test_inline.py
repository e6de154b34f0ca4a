"""The inline executor: steps with executor: inline run in the operator process,
against real HTTP servers on 127.0.0.1 (which the runner reaches only where a
test's network policy allows loopback)."""

from __future__ import annotations

import asyncio
import functools
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kwf.api import Executor, JobSpec, JobStatus, Step, StepPhase, StepStatus
from kwf.engine.plan import plan
from kwf.engine.types import Attempt, AttemptPhase, Inputs, Launch, Stop
from kwf.k8s.api import ApiError, NotFound
from kwf.k8s.index import RunKey
from kwf.k8s.manifests import Owner
from kwf.operator.inline import LOST_MESSAGE, InlineRunner, lost_attempts
from kwf.operator.network import NetworkPolicy
from kwf.operator.step_secrets import SecretCache, SecretForbidden
from kwf.steps import StepError
from tests.fakes import FakeGitHub, FakeOpenAI, FakeServer, Reply, Request, ScriptedServer

NOW = datetime(2025, 1, 1, tzinfo=UTC)
OWNER = Owner(name="run", namespace="ns", uid="uid-1")
INPUTS = Inputs(job="run", namespace="ns", params={}, state={})
KEY = "sk-unit-secret-4711"
#: The test servers listen on 127.0.0.1, which inline steps may not reach by default.
LOOPBACK = NetworkPolicy.from_flags(allow_cidrs=["127.0.0.1/32"])
Runner = functools.partial(InlineRunner, network=LOOPBACK)
#: The runner reads a spec only for its inline steps' names: an empty one will do.
NO_SPEC = JobSpec.model_construct()


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
    observed = runner.observe(OWNER.uid, spec or JobSpec.model_construct(), JobStatus(), {})
    (attempt,) = observed[step]
    return attempt


async def test_an_http_step_runs_here_and_wakes_its_run() -> None:
    woken = Woken()
    runner = Runner(woken, enabled=True)
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
    runner = Runner(woken, enabled=True)
    async with FakeGitHub() as github:
        launch = Launch(step=http_step(f"{github.url}/repos/nolar/kopf"), number=1, inputs=INPUTS)
        assert runner.launch(OWNER, launch) and runner.launch(OWNER, launch)
        await woken.until(1)
        await runner.close()
        assert len(github.requests) == 1


async def test_a_failing_answer_fails_the_attempt_with_the_step_message() -> None:
    woken = Woken()
    runner = Runner(woken, enabled=True)
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
    runner = Runner(woken, enabled=True, concurrency=1)
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
    runner = Runner(woken, enabled=True)
    async with Gate() as gate:
        runner.launch(OWNER, Launch(step=http_step(gate.url), number=1, inputs=INPUTS))
        assert await runner.stop(OWNER, Stop(step="stars", number=1, reason="cancelled"))
        assert not await runner.stop(OWNER, Stop(step="other", number=1, reason="cancelled"))
        gate.release.set()
        await runner.close()
    attempt = one(runner, "stars")
    assert attempt.phase is AttemptPhase.FAILED and attempt.message == "stopped: cancelled"


async def test_settle_says_whether_the_attempts_ended_in_time() -> None:
    runner = Runner(Woken(), enabled=True)
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
    runner = Runner(woken, enabled=True, secrets=SecretCache(fetch))
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
    observed = runner.observe(OWNER.uid, JobSpec.model_construct(), JobStatus(), {})
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


async def test_a_secret_the_namespace_did_not_grant_fails_saying_what_to_grant() -> None:
    async def fetch(namespace: str, name: str) -> dict[str, bytes]:
        if name == "broken":
            raise ApiError(500, "InternalError", f"cannot decode {KEY}")
        raise SecretForbidden("ServiceAccount kwf-inline")

    cache = SecretCache(fetch)
    with pytest.raises(StepError) as caught:
        await cache.value("team-b", "openai", "api-key", field="llm.apiKeySecretRef")
    assert caught.value.message == (
        "llm.apiKeySecretRef: the operator may not read Secret 'openai' in namespace team-b "
        "as ServiceAccount kwf-inline: grant it get on that Secret (see docs/security.md)"
    )
    with pytest.raises(StepError) as caught:
        await cache.value("team-b", "broken", "k", field="env.TOKEN")
    assert caught.value.message.endswith("the API server answered 500 InternalError")
    assert KEY not in caught.value.message


@pytest.mark.parametrize(
    ("name", "key", "problem"),
    [
        (
            "../../kube-system/secrets/x",
            "k",
            r"llm\.apiKeySecretRef\.name: '\.\./\.\./kube-system/secrets/x' is not",
        ),
        ("Upper", "k", r"llm\.apiKeySecretRef\.name: 'Upper' is not a Secret name"),
        ("ok", "a/b", r"llm\.apiKeySecretRef\.key: 'a/b' is not a Secret key name"),
    ],
)
async def test_a_malformed_secret_reference_is_never_looked_up(name: str, key: str, problem: str) -> None:
    fetched: list[str] = []

    async def fetch(namespace: str, secret: str) -> dict[str, bytes]:
        fetched.append(secret)
        return {}

    with pytest.raises(StepError, match=problem):
        await SecretCache(fetch).value("ns", name, key, field="llm.apiKeySecretRef")
    assert fetched == []


async def test_a_script_step_handed_over_as_inline_is_refused_and_never_run(tmp_path: Path) -> None:
    # As a step's returned steps could carry it: the executor says inline, the type is a script.
    marker = tmp_path / "ran"
    script = Step.model_validate(
        {"name": "x", "script": {"language": "shell", "source": f"touch {marker}"}}
    ).model_copy(update={"executor": Executor.INLINE})
    woken = Woken()
    runner = Runner(woken, enabled=True)
    assert runner.launch(OWNER, Launch(step=script, number=1, inputs=INPUTS))
    await woken.until(1)
    attempt = one(runner, "x")
    await runner.close()
    assert attempt.phase is AttemptPhase.FAILED
    assert attempt.message == (
        "executor: inline is only for http and llm steps; step 'x' is a script step and was not run "
        "(set executor: pod, or leave executor out)"
    )
    assert not marker.exists()
    assert runner.running == 0


async def test_loopback_is_refused_by_default_and_nothing_is_sent() -> None:
    woken = Woken()
    runner = InlineRunner(woken, enabled=True)  # no allowlist: the default policy
    async with FakeGitHub() as github, FakeOpenAI() as openai:
        runner.launch(
            OWNER, Launch(step=http_step(f"{github.url}/repos/nolar/kopf"), number=1, inputs=INPUTS)
        )
        base = openai.base_url.replace("127.0.0.1", "localhost")
        ask = {"name": "ask", "executor": "inline", "llm": {"baseURL": base, "model": "m", "prompt": "hi"}}
        runner.launch(OWNER, Launch(step=Step.model_validate(ask), number=1, inputs=INPUTS))
        await woken.until(2)
        await runner.close()
        assert github.requests == [] and openai.requests == []
    stars, answer = one(runner, "stars"), one(runner, "ask")
    assert stars.phase is AttemptPhase.FAILED and answer.phase is AttemptPhase.FAILED
    assert stars.message is not None and stars.message.startswith(
        "http.url: 127.0.0.1 is a loopback address: inline steps may not reach it"
    )
    assert answer.message is not None and answer.message.startswith("llm.baseURL: localhost resolves to ")
    assert "a loopback address" in answer.message


async def test_no_cookie_is_kept_between_attempts() -> None:
    woken = Woken()
    runner = Runner(woken, enabled=True)
    other = Owner(name="run", namespace="other", uid="uid-2")
    cookie = Reply(200, {"ok": True}, headers={"Set-Cookie": "session=tenant-a; Path=/"})
    async with ScriptedServer({"/login": cookie}) as server:
        runner.launch(OWNER, Launch(step=http_step(f"{server.url}/login"), number=1, inputs=INPUTS))
        await woken.until(1)
        runner.launch(other, Launch(step=http_step(f"{server.url}/login"), number=1, inputs=INPUTS))
        runner.launch(OWNER, Launch(step=http_step(f"{server.url}/login"), number=2, inputs=INPUTS))
        await woken.until(3)
        await runner.close()
    assert len(server.requests) == 3
    assert [r.headers.get("cookie") for r in server.requests] == [None, None, None]


async def test_circuits_open_per_namespace() -> None:
    woken = Woken()
    runner = Runner(woken, enabled=True)
    other = Owner(name="run", namespace="other", uid="uid-2")
    async with ScriptedServer({"/down": Reply(503, "down")}) as server:
        step = http_step(f"{server.url}/down", http={"url": f"{server.url}/down", "retries": 0})
        for number in range(1, 7):  # the 6th finds the circuit open
            runner.launch(OWNER, Launch(step=step, number=number, inputs=INPUTS))
            await woken.until(number)
        runner.launch(other, Launch(step=step, number=1, inputs=INPUTS))
        await woken.until(7)
        await runner.close()
        assert len(server.requests) == 6  # five of ns, then the other namespace's one
    mine = sorted(runner.observe(OWNER.uid, NO_SPEC, JobStatus(), {})["stars"], key=lambda a: a.number)
    assert mine[-1].message is not None and mine[-1].message.startswith("circuit open for 127.0.0.1:")
    (theirs,) = runner.observe(other.uid, NO_SPEC, JobStatus(), {})["stars"]
    assert theirs.message is not None and "answered 503" in theirs.message


async def test_a_namespace_with_many_attempts_queued_does_not_delay_another() -> None:
    woken = Woken()
    runner = Runner(woken, enabled=True, concurrency=1)
    busy = Owner(name="run", namespace="busy", uid="uid-busy")
    quiet = Owner(name="run", namespace="quiet", uid="uid-quiet")
    async with Gate() as gate:
        for number in range(1, 21):
            runner.launch(busy, Launch(step=http_step(f"{gate.url}/busy"), number=number, inputs=INPUTS))
        await asyncio.sleep(0.1)  # all twenty are in: one runs, nineteen wait
        runner.launch(quiet, Launch(step=http_step(f"{gate.url}/quiet"), number=1, inputs=INPUTS))
        gate.release.set()
        await woken.until(21)
        await runner.close()
    order = [request.path for request in gate.requests]
    assert len(order) == 21
    assert order.index("/quiet") <= 2, order  # first-come-first-served would make it 21st


async def test_the_time_limit_counts_the_wait_for_a_slot_and_the_retries() -> None:
    woken = Woken()
    runner = Runner(woken, enabled=True, concurrency=1)
    async with Gate() as gate, ScriptedServer({"/down": Reply(503, "down")}) as down:
        runner.launch(OWNER, Launch(step=http_step(gate.url), number=1, inputs=INPUTS))
        runner.launch(OWNER, Launch(step=http_step(gate.url), number=2, inputs=INPUTS, timeout_seconds=0.3))
        await woken.until(1)
        (waited,) = [a for a in runner.observe(OWNER.uid, NO_SPEC, JobStatus(), {})["stars"] if a.number == 2]
        gate.release.set()
        await woken.until(2)
        retrying = Step.model_validate(
            {"name": "retrying", "executor": "inline", "http": {"url": f"{down.url}/down", "retries": 10}}
        )
        runner.launch(OWNER, Launch(step=retrying, number=1, inputs=INPUTS, timeout_seconds=0.5))
        await woken.until(3)
        await runner.close()
    assert waited.phase is AttemptPhase.FAILED
    assert waited.message is not None and waited.message.startswith(
        "the attempt waited 0.3 s for an inline slot without getting one"
    )
    late = one(runner, "retrying")
    assert late.phase is AttemptPhase.FAILED
    assert late.message is not None and late.message.startswith(
        "the step timed out after 0.5 s, 0.0 s of them"
    )
    assert 1 < len(down.requests) < 11  # cut short while retrying


async def test_without_inline_steps_go_to_pods_and_the_run_is_told_once() -> None:
    runner = InlineRunner(Woken(), enabled=False)
    step = http_step("http://127.0.0.1:1/")
    assert not runner.launch(OWNER, Launch(step=step, number=1, inputs=INPUTS))
    assert not runner.launch(OWNER, Launch(step=step, number=2, inputs=INPUTS))
    pod_step = Step.model_validate({"name": "p", "http": {"url": "http://127.0.0.1:1/"}})
    enabled = Runner(Woken(), enabled=True)
    assert not enabled.launch(OWNER, Launch(step=pod_step, number=1, inputs=INPUTS))
    assert runner.observe(OWNER.uid, JobSpec.model_construct(), JobStatus(), {}) == {}


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
    runner = Runner(Woken(), enabled=True, clock=lambda: NOW)
    decision = plan(spec, status, runner.observe("uid-1", spec, status, {}), NOW)
    (launch,) = decision.actions
    assert isinstance(launch, Launch) and launch.number == 2
    (entry,) = decision.status.steps
    assert (entry.phase, entry.attempts, entry.infra_retries) == (StepPhase.RUNNING, 1, 1)
