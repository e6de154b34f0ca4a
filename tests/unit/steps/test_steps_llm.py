from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest

from kwf.api import LlmStep
from kwf.engine.types import Inputs, Usage
from kwf.steps import StepError, run_step, secret_refs
from kwf.steps.llm import run_llm
from kwf.steps.transport import MAX_RESPONSE_BYTES
from tests.fakes import FakeOpenAI
from tests.fakes.huge import HugeBody, MiB
from tests.unit.steps.conftest import make_step

KEY = "sk-test-4f9c2d0e-never-print-me"


def llm_step(server: FakeOpenAI, **fields: Any) -> Any:
    return make_step(
        llm={
            "baseURL": server.base_url,
            "model": "gpt-4o-mini",
            "apiKeySecretRef": {"name": "openai", "key": "api-key"},
            **fields,
        }
    )


async def test_prompt_answer_and_usage(inputs: Inputs) -> None:
    with FakeOpenAI(api_key=KEY) as server:
        step = llm_step(
            server, prompt="Summarise kopf in one line", system="Be brief", temperature=0.2, maxTokens=50
        )
        result = await run_step(step, inputs, 1, env={"KWF_LLM_API_KEY": KEY})
        (request,) = server.requests
    assert result.output == "Answer: Summarise kopf in one line"
    assert result.usage == {"gpt-4o-mini": Usage(prompt_tokens=7, completion_tokens=6, total_tokens=13)}
    body = request.json()
    assert body["messages"] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Summarise kopf in one line"},
    ]
    assert body["temperature"] == 0.2 and body["max_tokens"] == 50
    assert "response_format" not in body


async def test_the_key_arrives_and_appears_nowhere_else(inputs: Inputs) -> None:
    with FakeOpenAI(api_key=KEY) as server:
        step = llm_step(server, prompt="hello", jsonMode=True)
        result = await run_step(step, inputs, 1, env={"KWF_LLM_API_KEY": KEY})
        (request,) = server.requests
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in request.body.decode()
    assert KEY not in json.dumps(result.to_json())


async def test_a_wrong_key_fails_without_showing_it(inputs: Inputs) -> None:
    with FakeOpenAI(api_key=KEY) as server, pytest.raises(StepError) as caught:
        await run_step(llm_step(server, prompt="hi"), inputs, 1, env={"KWF_LLM_API_KEY": "sk-wrong-key"})
    assert caught.value.message == "the model endpoint answered 401: Incorrect API key provided."
    assert len(server.requests) == 1  # 401 is not retried


async def test_a_key_quoted_by_the_endpoint_is_masked(inputs: Inputs) -> None:
    with FakeOpenAI(api_key=KEY, quote_key=True) as server, pytest.raises(StepError) as caught:
        await run_step(llm_step(server, prompt="hi"), inputs, 1, env={"KWF_LLM_API_KEY": "sk-wrong-key"})
    assert caught.value.message == "the model endpoint answered 401: Incorrect API key provided: ***."


async def test_missing_key_names_the_secret(inputs: Inputs) -> None:
    with FakeOpenAI(api_key=KEY) as server:
        with pytest.raises(
            StepError, match=r"KWF_LLM_API_KEY is empty: the key 'api-key' of Secret 'openai'"
        ):
            await run_step(llm_step(server, prompt="hi"), inputs, 1, env={})
        assert server.requests == []


async def test_an_endpoint_without_keys(inputs: Inputs) -> None:
    with FakeOpenAI() as server:
        step = make_step(llm={"baseURL": server.base_url, "model": "llama3", "prompt": "hi"})
        assert (await run_step(step, inputs, 1)).output == "Answer: hi"


async def test_messages_with_a_system_prompt(inputs: Inputs) -> None:
    with FakeOpenAI(api_key=KEY) as server:
        messages = [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
        ]
        step = llm_step(server, messages=messages, system="sys")
        result = await run_step(step, inputs, 1, env={"KWF_LLM_API_KEY": KEY})
        sent = server.completions()[0]["messages"]
    assert sent == [{"role": "system", "content": "sys"}, *messages]
    assert result.output == "Answer: second question"


async def test_json_mode_parses_the_answer(inputs: Inputs) -> None:
    with FakeOpenAI(api_key=KEY) as server:
        step = llm_step(server, prompt="three little words", jsonMode=True)
        result = await run_step(step, inputs, 1, env={"KWF_LLM_API_KEY": KEY})
        assert server.completions()[0]["response_format"] == {"type": "json_object"}
    assert result.output == {"answer": "three little words", "words": 3}


async def test_json_mode_with_an_answer_that_is_not_json(inputs: Inputs) -> None:
    with FakeOpenAI(api_key=KEY, replies={"broken": "Sure! Here is JSON: {oops"}) as server:
        step = llm_step(server, prompt="give broken json", jsonMode=True)
        with pytest.raises(
            StepError, match=r"jsonMode: the answer is not JSON .*'Sure! Here is JSON: \{oops'"
        ):
            await run_step(step, inputs, 1, env={"KWF_LLM_API_KEY": KEY})


async def test_transient_failures_are_retried_by_the_client() -> None:
    with FakeOpenAI(api_key=KEY) as server:
        server.fail_next(1, 503)
        step = llm_step(server, prompt="again")
        assert step.llm is not None
        result = await run_llm(step.llm, env={"KWF_LLM_API_KEY": KEY}, max_retries=1)
        assert len(server.completions()) == 2
    assert result.output == "Answer: again"


async def test_unreachable_endpoint(inputs: Inputs) -> None:
    with FakeOpenAI() as server:
        url = server.base_url
    step = make_step(llm={"baseURL": url, "model": "m", "prompt": "hi"})
    assert step.llm is not None
    with pytest.raises(StepError, match="cannot reach the model endpoint"):
        await run_llm(step.llm, env={}, max_retries=0)


async def test_prompt_or_messages_required() -> None:
    # The models refuse such a step; the runner still checks what it is handed.
    spec = LlmStep.model_construct(model="m", system="only a system prompt", prompt=None, messages=None)
    with pytest.raises(StepError, match="needs a prompt or messages"):
        await run_llm(spec, env={})


async def test_a_huge_answer_fails_at_the_cap_without_being_read_whole(inputs: Inputs) -> None:
    with HugeBody(300 * MiB) as server:
        step = make_step(llm={"baseURL": f"{server.url}/v1", "model": "m", "prompt": "hi"})
        tracemalloc.start()
        try:
            with pytest.raises(StepError) as caught:
                await run_step(step, inputs, 1)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        sent = server.sent
    assert caught.value.message.startswith(
        f"llm: the model endpoint's answer: the response body is over the cap of {MAX_RESPONSE_BYTES} bytes"
    )
    assert peak < 4 * MAX_RESPONSE_BYTES, f"{peak / MiB:.0f} MiB held for a capped answer"
    assert sent < 100 * MiB


def test_secret_refs_of_a_step() -> None:
    step = make_step(
        llm={"model": "m", "prompt": "p", "apiKeySecretRef": {"name": "openai", "key": "api-key"}},
        env=[
            {"name": "PLAIN", "value": "v"},
            {"name": "GH_TOKEN", "secretKeyRef": {"name": "github", "key": "token"}},
        ],
    )
    refs = [(r.name, r.ref.name, r.ref.key) for r in secret_refs(step)]
    assert refs == [("GH_TOKEN", "github", "token"), ("KWF_LLM_API_KEY", "openai", "api-key")]
    assert secret_refs(make_step(http={"url": "http://x.test/"})) == []
