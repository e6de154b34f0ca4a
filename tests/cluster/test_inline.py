"""Inline steps (executor: inline) run by the operator process itself, against
the real control plane: no pods are needed, and none may be created."""

from __future__ import annotations

import json

import pytest

from kwf.k8s.api import EVENTS, SECRETS, Client
from tests.fakes import FakeGitHub, FakeOpenAI, Reply, ScriptedServer
from tests.support.operator_process import OperatorProcess
from tests.support.runs import (
    apply_run,
    children,
    finished,
    get_run,
    run_body,
    step_status,
    wait_for,
)

KEY = "sk-cluster-inline-8d1f0c"


@pytest.fixture
def operator_args() -> list[str]:
    return ["--inline"]


def http(name: str, url: str, **fields: object) -> dict[str, object]:
    return {"name": name, "executor": "inline", "http": {"url": url, **fields}}


async def test_inline_http_steps_share_state_without_a_pod(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    with FakeGitHub() as github:
        steps = [
            {
                **http("stars", "{{ params.api }}/repos/{{ params.repo }}", select="body.stargazers_count"),
                "saveAs": "stars",
            },
            {
                **http("language", "{{ params.api }}/repos/{{ params.repo }}", select="body.language"),
                "dependsOn": ["stars"],
                "when": "state.stars > 1000",
                "saveAs": "language",
            },
        ]
        body = run_body("http", steps, params={"api": github.url, "repo": "nolar/kopf"})
        await apply_run(api, namespace, body)
        run = await finished(api, namespace, "http")
        assert len(github.requests) == 2
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert run["status"]["sharedState"] == {"stars": 2400, "language": "Python"}
    assert step_status(run, "stars")["attempts"] == 1
    assert await children(api, namespace, "http") == []


async def test_an_inline_llm_step_records_usage_and_never_shows_its_key(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "openai"},
        "stringData": {"api-key": KEY},
    }
    await api.create(SECRETS, secret, namespace)
    with FakeOpenAI(api_key=KEY, quote_key=True) as openai:
        step = {
            "name": "haiku",
            "executor": "inline",
            "llm": {
                "baseURL": openai.base_url,
                "model": "gpt-test",
                "prompt": "a haiku about {{ params.topic }}",
                "apiKeySecretRef": {"name": "openai", "key": "api-key"},
            },
            "saveAs": "haiku",
        }
        await apply_run(api, namespace, run_body("llm", [step], params={"topic": "operators"}))
        run = await finished(api, namespace, "llm")
        assert [r.headers["authorization"] for r in openai.requests] == [f"Bearer {KEY}"]
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert run["status"]["sharedState"] == {"haiku": "Answer: a haiku about operators"}
    assert run["status"]["usage"]["gpt-test"] == {
        "promptTokens": 4,
        "completionTokens": 5,
        "totalTokens": 9,
    }
    events = await api.list(EVENTS, namespace)
    assert events["items"], "the run's phase changes are posted as Events"
    for where, text in (
        ("status", json.dumps(await get_run(api, namespace, "llm"))),
        ("events", json.dumps(events)),
        ("the operator log", operator.log()),
    ):
        assert KEY not in text, f"the API key is in {where}"


async def test_an_inline_attempt_cut_short_by_a_restart_runs_again_without_spending_a_retry(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    slow_then_quick = [Reply(200, {"n": 1}, delay=60), Reply(200, {"n": 2})]
    with ScriptedServer({"/thing": slow_then_quick}) as server:
        step = {**http("fetch", f"{server.url}/thing", select="body.n"), "saveAs": "n"}
        step["retry"] = {"limit": 0}
        await apply_run(api, namespace, run_body("restart", [step]))
        await wait_for(
            lambda: get_run(api, namespace, "restart"),
            lambda r: step_status(r, "fetch").get("phase") == "Running" and server.hits("/thing") == 1,
            what="the first attempt under way",
        )
        operator.kill()
        operator.start()
        run = await finished(api, namespace, "restart")
        assert server.hits("/thing") == 2
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert run["status"]["sharedState"] == {"n": 2}
    fetch = step_status(run, "fetch")
    assert (fetch["attempts"], fetch["infraRetries"], fetch["lastAttempt"]) == (1, 1, 2)
