"""Run one attempt of a rendered step, whatever its type, and what it needs from Secrets."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from kwf.api import SecretKeyRef, Step
from kwf.engine.types import Inputs, Limits, Result
from kwf.steps.container import run_container
from kwf.steps.contract import DEFAULT_LIMITS, ENV_LLM_API_KEY, StepError
from kwf.steps.script import run_script

if TYPE_CHECKING:
    import httpx2

    from kwf.steps.http import CircuitBreakers


@dataclasses.dataclass(frozen=True)
class SecretEnv:
    """An environment variable of the step's container filled from a Secret's key."""

    name: str
    ref: SecretKeyRef


def secret_refs(step: Step) -> list[SecretEnv]:
    """Every Secret key the step needs, as the variables that carry them.

    An llm step's ``apiKeySecretRef`` becomes ``KWF_LLM_API_KEY``; ``env``
    entries with ``secretKeyRef`` keep their names.
    """
    refs = [SecretEnv(var.name, var.secret_key_ref) for var in step.env or () if var.secret_key_ref]
    if step.llm is not None and step.llm.api_key_secret_ref is not None:
        refs.append(SecretEnv(ENV_LLM_API_KEY, step.llm.api_key_secret_ref))
    return refs


async def run_step(
    step: Step,
    inputs: Inputs,
    attempt: int,
    *,
    env: Mapping[str, str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    time_limit: float | None = None,
    http_client: httpx2.AsyncClient | None = None,
    breakers: CircuitBreakers | None = None,
    allow_container_local: bool = False,
    echo: bool = False,
) -> Result:
    """Run one attempt of ``step`` (rendered: no templates left) and return its answer.

    ``env`` holds the values of the step's Secret variables (see
    :func:`secret_refs`), resolved by the caller; in a step pod they are the
    pod's own environment. ``time_limit`` (seconds) defaults to the step's
    ``timeoutSeconds``. Raises StepError when the step fails.
    """
    env = dict(env or {})
    if time_limit is None and step.timeout_seconds is not None:
        time_limit = float(step.timeout_seconds)
    if step.script is not None:
        return await run_script(
            step, inputs, attempt, env=env, time_limit=time_limit, limits=limits, echo=echo
        )
    if step.container is not None:
        return await run_container(
            step,
            inputs,
            attempt,
            env=env,
            time_limit=time_limit,
            limits=limits,
            allow_local=allow_container_local,
            echo=echo,
        )
    # Imported on first use: openai alone takes seconds to import, which a
    # script step's pod should not pay.
    if step.http is not None:
        from kwf.steps.http import run_http

        call = run_http(step.http, client=http_client, breakers=breakers)
    elif step.llm is not None:
        from kwf.steps.llm import run_llm

        call = run_llm(step.llm, env=env, http_client=http_client)
    else:
        raise StepError(f"step {step.name!r} has no type")
    try:
        return await asyncio.wait_for(call, time_limit)
    except TimeoutError:
        raise StepError(f"the step timed out after {time_limit:g} seconds") from None


def env_from_process(step: Step) -> dict[str, str]:
    """The Secret variables of ``step`` as this process got them (in a step pod)."""
    return {ref.name: os.environ[ref.name] for ref in secret_refs(step) if ref.name in os.environ}
