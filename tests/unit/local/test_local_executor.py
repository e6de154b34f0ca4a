"""The local executor on its own: real processes, real sockets, no planner."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from kwf.api import Step
from kwf.engine.types import AttemptPhase, Inputs, Launch, Stop
from kwf.local.executor import LocalExecutor, secret_env_name
from tests.fakes import FakeGitHub, FakeOpenAI

INPUTS = Inputs(job="run-1", namespace=None, params={"n": 2}, state={"counter": 1})


def step(**fields: Any) -> Step:
    return Step.model_validate({"name": "s", **fields})


async def settle(executor: LocalExecutor) -> None:
    """Wait until no attempt runs (bounded: a hung attempt fails the test)."""
    async with asyncio.timeout(60):
        while executor.running:
            executor.changes_seen()
            if executor.running:
                await executor.wait(None)


async def only_attempt(executor: LocalExecutor, name: str = "s") -> Any:
    attempts = executor.observe()[name]
    assert len(attempts) == 1
    return attempts[0]


async def test_script_step_answers_with_its_result() -> None:
    executor = LocalExecutor()
    source = (
        "import json, os\n"
        "s = json.load(open(os.environ['KWF_STATE'])); p = json.load(open(os.environ['KWF_PARAMS']))\n"
        "json.dump({'output': os.environ['KWF_ATTEMPT'], 'state': {'counter': s['counter'] + p['n']}},"
        " open(os.environ['KWF_RESULT'], 'w'))\n"
    )
    await executor.launch(Launch(step(script={"source": source}), 4, INPUTS))
    await settle(executor)
    attempt = await only_attempt(executor)
    assert attempt.phase is AttemptPhase.SUCCEEDED
    assert attempt.number == 4
    assert attempt.result.output == "4"
    assert attempt.result.state == {"counter": 3}
    assert attempt.started_at <= attempt.finished_at
    await executor.close()


async def test_failing_step_is_failed_with_its_error() -> None:
    executor = LocalExecutor()
    await executor.launch(
        Launch(step(script={"language": "shell", "source": "echo broken >&2; exit 3"}), 1, INPUTS)
    )
    await settle(executor)
    attempt = await only_attempt(executor)
    assert attempt.phase is AttemptPhase.FAILED
    assert "code 3" in attempt.message and "broken" in attempt.message
    await executor.close()


async def test_launching_the_same_attempt_twice_runs_it_once(tmp_path: Path) -> None:
    executor = LocalExecutor()
    log = tmp_path / "runs"
    source = f"echo run >> {log}"
    launch = Launch(step(script={"language": "shell", "source": source}), 1, INPUTS)
    await executor.launch(launch)
    await executor.launch(launch)
    await settle(executor)
    await executor.launch(launch)  # and not again after it ended
    await settle(executor)
    assert log.read_text() == "run\n"
    assert executor.has("s", 1) and not executor.has("s", 2)
    await executor.close()


async def test_stop_kills_the_running_process(tmp_path: Path) -> None:
    executor = LocalExecutor()
    pid_file = tmp_path / "pid"
    source = f"echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec sleep 600"
    await executor.launch(Launch(step(script={"language": "shell", "source": source}), 1, INPUTS))
    async with asyncio.timeout(30):
        while not pid_file.exists():  # noqa: ASYNC110 - a file another process writes
            await asyncio.sleep(0.02)
    pid = int(pid_file.read_text())
    await executor.stop(Stop("s", 1, "the run was cancelled"))
    attempt = await only_attempt(executor)
    assert attempt.phase is AttemptPhase.FAILED
    assert attempt.message == "stopped: the run was cancelled"
    assert executor.running == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone and reaped, not a zombie left behind
    await executor.stop(Stop("s", 1, "again"))  # stopping an ended attempt is no error
    await executor.stop(Stop("never", 1, "unknown"))
    await executor.close()


async def test_time_limit_fails_the_attempt() -> None:
    executor = LocalExecutor()
    launch = Launch(
        step(script={"language": "shell", "source": "exec sleep 600"}), 1, INPUTS, timeout_seconds=0.3
    )
    await executor.launch(launch)
    await settle(executor)
    attempt = await only_attempt(executor)
    assert attempt.phase is AttemptPhase.FAILED
    assert "timed out" in attempt.message
    await executor.close()


async def test_wait_returns_when_an_attempt_ends_not_before() -> None:
    executor = LocalExecutor()
    executor.changes_seen()
    assert await executor.wait(0) is False  # nothing happened
    await executor.launch(Launch(step(script={"language": "shell", "source": "true"}), 1, INPUTS))
    assert await asyncio.wait_for(executor.wait(None), 60) is True
    await executor.close()


async def test_http_step_runs_in_process() -> None:
    with FakeGitHub() as github:
        executor = LocalExecutor()
        http = {"url": f"{github.url}/repos/nolar/kopf", "select": "body.language"}
        await executor.launch(Launch(step(http=http), 1, INPUTS))
        await settle(executor)
        attempt = await only_attempt(executor)
        await executor.close()
    assert attempt.phase is AttemptPhase.SUCCEEDED, attempt.message
    assert attempt.result.output == "Python"


async def test_llm_key_comes_from_the_secret_variable_and_stays_out_of_results() -> None:
    key = "sk-local-secret"
    with FakeOpenAI(api_key=key) as openai:
        llm = {
            "baseURL": openai.base_url,
            "model": "m",
            "prompt": "hi",
            "apiKeySecretRef": {"name": "openai", "key": "api-key"},
        }
        with_key = LocalExecutor(environ={secret_env_name("openai", "api-key"): key})
        await with_key.launch(Launch(step(llm=llm), 1, INPUTS))
        await settle(with_key)
        good = await only_attempt(with_key)
        without = LocalExecutor(environ={})
        await without.launch(Launch(step(llm=llm), 1, INPUTS))
        await settle(without)
        bad = await only_attempt(without)
        await with_key.close()
        await without.close()
        headers = [r.headers.get("authorization") for r in openai.requests]
    assert good.phase is AttemptPhase.SUCCEEDED, good.message
    assert good.result.output == "Answer: hi"
    assert headers == [f"Bearer {key}"]  # the key-less attempt never reached the server
    assert bad.phase is AttemptPhase.FAILED
    assert "apiKeySecretRef" in bad.message
    assert key not in repr(good) + repr(bad)


def test_secret_variable_names() -> None:
    assert secret_env_name("openai", "api-key") == "KWF_SECRET_OPENAI_API_KEY"
    assert secret_env_name("my.creds", "token") == "KWF_SECRET_MY_CREDS_TOKEN"


async def test_container_step_of_the_runner_image_runs_here_others_do_not() -> None:
    code = "import json, os; json.dump({'output': 'ran'}, open(os.environ['KWF_RESULT'], 'w'))"
    runner = {"image": "kwf.local/runner:dev", "command": ["python3", "-c", code]}
    other = {"image": "docker.io/library/python:3.12", "command": ["python3", "-c", code]}
    executor = LocalExecutor(environ={})
    await executor.launch(Launch(step(name="a", container=runner), 1, INPUTS))
    await executor.launch(Launch(step(name="b", container=other), 1, INPUTS))
    await settle(executor)
    a, b = executor.observe()["a"][0], executor.observe()["b"][0]
    assert a.phase is AttemptPhase.SUCCEEDED and a.result.output == "ran"
    assert b.phase is AttemptPhase.FAILED and "allow-container-local" in b.message
    allowed = LocalExecutor(environ={}, allow_container_local=True)
    await allowed.launch(Launch(step(name="b", container=other), 1, INPUTS))
    await settle(allowed)
    assert allowed.observe()["b"][0].phase is AttemptPhase.SUCCEEDED
    await executor.close()
    await allowed.close()
