"""LLM steps with the openai client, against any OpenAI-compatible endpoint.

The API key comes from ``$KWF_LLM_API_KEY``, which the operator fills from
the step's ``apiKeySecretRef`` through a secretKeyRef (or passes to the
inline runner). It is handed to the client and nowhere else: never logged,
never part of an output or an error message. A step without
``apiKeySecretRef`` talks to endpoints that need no key.

The output is the answer's text, or with ``jsonMode`` the JSON it parses to.
Token usage is reported under the step's ``model``. The answer's body is read
with a cap (kwf.steps.transport), as any step's response is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx2
import openai
from openai.types.chat import ChatCompletion

from kwf.api import LlmStep
from kwf.engine.types import Result, Usage
from kwf.steps.contract import ENV_LLM_API_KEY, StepError
from kwf.steps.transport import AddressRefused, ResponseTooLarge, bounded_client, cause

#: In-step retries of the client (connection errors, 408/409/429/5xx).
MAX_RETRIES = 2
#: Stands in for a key when the endpoint needs none; the client insists on one.
NO_KEY = "no-key"
#: Characters of a non-JSON answer quoted in a failure message.
ANSWER_QUOTE = 200


def chat_messages(spec: LlmStep) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    if spec.system is not None:
        messages.append({"role": "system", "content": spec.system})
    if spec.messages is not None:
        messages.extend({"role": m.role, "content": m.content} for m in spec.messages)
    elif spec.prompt is not None:
        messages.append({"role": "user", "content": spec.prompt})
    if not any(m["role"] != "system" for m in messages):
        raise StepError("an llm step needs a prompt or messages")
    return messages


def api_key(spec: LlmStep, env: Mapping[str, str]) -> str:
    key = env.get(ENV_LLM_API_KEY)
    if key:
        return key
    if spec.api_key_secret_ref is not None:
        ref = spec.api_key_secret_ref
        raise StepError(
            f"${ENV_LLM_API_KEY} is empty: the key {ref.key!r} of Secret {ref.name!r} "
            "(llm.apiKeySecretRef) did not reach the step"
        )
    return NO_KEY


async def run_llm(
    spec: LlmStep,
    *,
    env: Mapping[str, str],
    max_retries: int = MAX_RETRIES,
    http_client: httpx2.AsyncClient | None = None,
) -> Result:
    """Ask once (the client retries transient failures) and read the answer.

    ``http_client`` (the inline executor's, shared) is used and left open;
    without one, the call has its own bounded client."""
    request: dict[str, Any] = {"model": spec.model, "messages": chat_messages(spec)}
    if spec.temperature is not None:
        request["temperature"] = spec.temperature
    if spec.max_tokens is not None:
        request["max_tokens"] = spec.max_tokens
    if spec.json_mode:
        request["response_format"] = {"type": "json_object"}
    key = api_key(spec, env)
    try:
        if http_client is not None:
            completion = await _ask(spec, request, key, max_retries, http_client)
        else:
            async with bounded_client(follow_redirects=True) as own:
                completion = await _ask(spec, request, key, max_retries, own)
    except StepError as exc:
        # Some endpoints quote the key they refused; it must not reach status or logs.
        raise StepError(exc.message.replace(key, "***") if key != NO_KEY else exc.message) from None
    if not completion.choices:
        raise StepError("the model answered with no choices")
    text = completion.choices[0].message.content or ""
    usage: dict[str, Usage] = {}
    if completion.usage is not None:
        usage[spec.model] = Usage(
            prompt_tokens=completion.usage.prompt_tokens,
            completion_tokens=completion.usage.completion_tokens,
            total_tokens=completion.usage.total_tokens,
        )
    return Result(output=_parse(text) if spec.json_mode else text, usage=usage)


async def _ask(
    spec: LlmStep, request: dict[str, Any], key: str, max_retries: int, http: httpx2.AsyncClient
) -> ChatCompletion:
    # Not closed here: closing it would close ``http``, which its caller owns.
    client = openai.AsyncOpenAI(
        api_key=key,
        base_url=spec.base_url,
        timeout=spec.timeout_seconds,
        max_retries=max_retries,
        http_client=http,
    )
    try:
        completion: ChatCompletion = await client.chat.completions.create(**request)
        return completion
    except openai.APIStatusError as exc:
        raise StepError(f"the model endpoint answered {exc.status_code}: {_reason(exc)}") from None
    except openai.APITimeoutError:
        raise StepError(f"the model endpoint did not answer within {spec.timeout_seconds:g} s") from None
    except openai.APIConnectionError as exc:
        raise StepError(f"cannot reach the model endpoint: {exc.message}") from None
    except openai.OpenAIError as exc:
        raise StepError(f"the model request failed: {type(exc).__name__}") from None
    except (AddressRefused, ResponseTooLarge, httpx2.HTTPError) as exc:
        raise _refusal(exc) from None


def _refusal(error: Exception) -> StepError:
    """The step message for what the bounded client refused, naming the field."""
    refused = cause(error, AddressRefused)
    if refused is not None:
        return StepError(f"llm.baseURL: {refused}")
    large = cause(error, ResponseTooLarge)
    if large is not None:
        return StepError(f"llm: the model endpoint's answer: {large}")
    return StepError(f"the model request failed: {type(error).__name__}: {str(error)[:300]}")


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        quote = text if len(text) <= ANSWER_QUOTE else text[:ANSWER_QUOTE] + "..."
        raise StepError(f"jsonMode: the answer is not JSON ({exc.msg} at {exc.pos}): {quote!r}") from None


def _reason(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:300]
    return exc.message[:300]
