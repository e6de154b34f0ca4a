from __future__ import annotations

import tracemalloc

import pytest

from kwf.api import HttpStep
from kwf.engine.types import Inputs
from kwf.steps import StepError, run_step
from kwf.steps.http import Backoff, CircuitBreakers, run_http, select
from kwf.steps.transport import MAX_RESPONSE_BYTES
from tests.fakes import FakeGitHub, Reply, ScriptedServer
from tests.fakes.huge import HugeBody, MiB
from tests.unit.steps.conftest import make_step


class Sleeps:
    """Records the waits instead of waiting: time is an argument."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def http(url: str, **fields: object) -> HttpStep:
    return HttpStep.model_validate({"url": url, **fields})


async def test_get_with_select(inputs: Inputs) -> None:
    with FakeGitHub() as gh:
        step = make_step(http={"url": f"{gh.url}/repos/nolar/kopf", "select": "body.description"})
        result = await run_step(step, inputs, 1, breakers=CircuitBreakers())
    assert result.output.startswith("A Python framework")


async def test_whole_response_without_select() -> None:
    with FakeGitHub() as gh:
        result = await run_http(http(f"{gh.url}/repos/kwf/demo"), breakers=CircuitBreakers())
    assert result.output["status"] == 200
    assert result.output["headers"]["content-type"] == "application/json"
    assert result.output["body"]["stargazers_count"] == 7


async def test_post_sends_headers_and_json_body() -> None:
    with ScriptedServer({"POST /hook": Reply(201, "created")}) as server:
        spec = http(f"{server.url}/hook", method="POST", headers={"X-Run": "r1"}, body={"a": [1, 2]})
        result = await run_http(spec, breakers=CircuitBreakers())
    assert result.output["body"] == "created"
    (request,) = server.requests
    assert request.headers["x-run"] == "r1"
    assert request.json() == {"a": [1, 2]}


async def test_unexpected_status_fails_quoting_the_body() -> None:
    with FakeGitHub() as gh:
        with pytest.raises(StepError, match=r"answered 404, expected one of \[200, 201.*Not Found"):
            await run_http(http(f"{gh.url}/repos/no/such"), breakers=CircuitBreakers())
        result = await run_http(
            http(f"{gh.url}/repos/no/such", expectedStatus=[404], select="status"), breakers=CircuitBreakers()
        )
    assert result.output == 404


async def test_retries_503_then_succeeds() -> None:
    sleeps = Sleeps()
    with FakeGitHub() as gh:
        gh.fail_next(2)
        spec = http(f"{gh.url}/repos/nolar/kopf", select="body.language", retries=2)
        result = await run_http(spec, breakers=CircuitBreakers(), sleep=sleeps)
        assert len(gh.requests) == 3
    assert result.output == "Python"
    assert sleeps.waits == [0.2, 0.4]


async def test_gives_up_after_the_retries() -> None:
    with FakeGitHub() as gh:
        gh.fail_next(5)
        spec = http(f"{gh.url}/repos/nolar/kopf", retries=1)
        with pytest.raises(StepError, match="answered 503 after 2 tries"):
            await run_http(spec, breakers=CircuitBreakers(), sleep=Sleeps())
        assert len(gh.requests) == 2


async def test_honours_retry_after_up_to_the_cap() -> None:
    sleeps = Sleeps()
    with FakeGitHub() as gh:
        gh.fail_next(1, 429, retry_after=3)
        gh.fail_next(1, 429, retry_after=3600)
        spec = http(f"{gh.url}/repos/nolar/kopf", retries=2)
        await run_http(spec, breakers=CircuitBreakers(), sleep=sleeps, backoff=Backoff(retry_after_cap=10))
    assert sleeps.waits == [3, 10]


async def test_connection_refused_is_retried_and_named() -> None:
    with FakeGitHub() as gh:
        url = f"{gh.url}/repos/nolar/kopf"
    sleeps = Sleeps()  # the server is gone: nothing listens on its port now
    with pytest.raises(StepError, match=r"failed: ConnectError.*after 3 tries"):
        await run_http(http(url, retries=2), breakers=CircuitBreakers(), sleep=sleeps)
    assert len(sleeps.waits) == 2


async def test_not_found_is_not_retried() -> None:
    with FakeGitHub() as gh:
        with pytest.raises(StepError, match="404"):
            await run_http(http(f"{gh.url}/repos/a/b"), breakers=CircuitBreakers(), sleep=Sleeps())
        assert len(gh.requests) == 1


async def test_circuit_opens_after_failures_in_a_row_then_half_opens() -> None:
    clock = Clock()
    breakers = CircuitBreakers(threshold=3, cooldown=30, clock=clock)
    with FakeGitHub() as gh:
        gh.fail_next(3)
        spec = http(f"{gh.url}/repos/nolar/kopf", retries=0)
        for _ in range(3):
            with pytest.raises(StepError, match="answered 503"):
                await run_http(spec, breakers=breakers)
        with pytest.raises(StepError, match=r"circuit open for 127\.0\.0\.1:\d+ .* in 30\.0 s"):
            await run_http(spec, breakers=breakers)
        assert len(gh.requests) == 3  # the open circuit sent nothing

        clock.now += 31  # half-open: one trial goes through and closes it
        assert (await run_http(spec, breakers=breakers)).output["status"] == 200
        gh.fail_next(1)
        with pytest.raises(StepError, match="answered 503"):
            await run_http(spec, breakers=breakers)
        assert not breakers.is_open(f"127.0.0.1:{gh.port}")


async def test_a_failed_trial_reopens_the_circuit_at_once() -> None:
    clock = Clock()
    breakers = CircuitBreakers(threshold=2, cooldown=10, clock=clock)
    with FakeGitHub() as gh:
        gh.fail_next(3)
        spec = http(f"{gh.url}/repos/nolar/kopf", retries=0)
        for _ in range(2):
            with pytest.raises(StepError):
                await run_http(spec, breakers=breakers)
        clock.now += 11
        with pytest.raises(StepError, match="answered 503"):
            await run_http(spec, breakers=breakers)
        with pytest.raises(StepError, match="circuit open"):
            await run_http(spec, breakers=breakers)
        # Another host is not affected.
        with FakeGitHub() as other:
            assert (await run_http(http(f"{other.url}/repos/kwf/demo"), breakers=breakers)).output


async def test_client_timeout_is_a_transient_failure() -> None:
    with ScriptedServer({"/slow": Reply(200, "late", delay=2)}) as server:
        spec = http(f"{server.url}/slow", timeoutSeconds=0.2, retries=0)
        with pytest.raises(StepError, match="ReadTimeout"):
            await run_http(spec, breakers=CircuitBreakers())


@pytest.mark.parametrize(
    ("declare", "gzip"),
    [(False, False), (True, False), (False, True)],
    ids=["chunked", "declared-length", "gzip-bomb"],
)
async def test_a_huge_body_fails_at_the_cap_without_being_read_whole(
    inputs: Inputs, declare: bool, gzip: bool
) -> None:
    # The step pod's way (no client given): the default cap.
    with HugeBody(300 * MiB, declare=declare, gzip=gzip) as server:
        step = make_step(http={"url": f"{server.url}/big", "retries": 2})
        tracemalloc.start()
        try:
            with pytest.raises(StepError) as caught:
                await run_step(step, inputs, 1, breakers=CircuitBreakers())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        sent, requests = server.sent, server.requests
    assert caught.value.message.startswith(
        f"http: GET {server.url}/big: the response body is over the cap of {MAX_RESPONSE_BYTES} bytes"
    )
    assert peak < 4 * MAX_RESPONSE_BYTES, f"{peak / MiB:.0f} MiB held for a capped body"
    assert sent < 100 * MiB  # the reading stopped: the rest was never sent
    assert requests == 1  # a body over the cap is not a transient failure


async def test_the_cap_is_an_argument() -> None:
    with HugeBody(2 * MiB) as server:
        with pytest.raises(StepError, match=f"over the cap of {MiB} bytes"):
            await run_http(http(server.url), breakers=CircuitBreakers(), max_body=MiB)
        result = await run_http(
            http(server.url, select="status"), breakers=CircuitBreakers(), max_body=3 * MiB
        )
    assert result.output == 200


def test_breakers_forget_the_oldest_hosts_beyond_their_bound() -> None:
    breakers = CircuitBreakers(threshold=1, hosts=2)
    for host in ("a", "b", "c"):
        breakers.failed(host)
    assert [breakers.is_open(h) for h in ("a", "b", "c")] == [False, True, True]


@pytest.mark.parametrize("url", ["ftp://example.test/x", "not a url", "/relative"])
async def test_only_http_urls(url: str) -> None:
    with pytest.raises(StepError, match=r"http\.url"):
        await run_http(http(url), breakers=CircuitBreakers())


def test_select_walks_objects_and_lists() -> None:
    data = {"body": {"items": [{"name": "a"}, {"name": "b"}]}}
    assert select(data, "body.items.1.name") == "b"
    assert select(data, "body.items") == [{"name": "a"}, {"name": "b"}]


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("body.missing", "no 'missing' in body"),
        ("body.items.5", "body.items is a list of 2, no item '5'"),
        ("body.items.0.name.x", "body.items.0.name is str, not an object"),
        ("headers", "no 'headers' in the response"),
    ],
)
def test_select_names_the_missing_path(path: str, problem: str) -> None:
    data = {"body": {"items": [{"name": "a"}, {"name": "b"}]}}
    with pytest.raises(StepError, match=f"select '{path}': {problem}"):
        select(data, path)
