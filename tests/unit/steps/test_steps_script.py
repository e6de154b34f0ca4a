from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from kwf.engine.types import Inputs, Limits
from kwf.steps import StepError, run_step
from tests.unit.steps.conftest import make_step


def python(source: str, **fields: object) -> object:
    return make_step(script={"language": "python", "source": source}, **fields)


def shell(source: str, **fields: object) -> object:
    return make_step(script={"language": "shell", "source": source}, **fields)


async def test_python_reads_inputs_and_writes_result(inputs: Inputs) -> None:
    step = python(
        "import json, os\n"
        "state = json.load(open(os.environ['KWF_STATE']))\n"
        "params = json.load(open(os.environ['KWF_PARAMS']))\n"
        "who = [os.environ[k] for k in ('KWF_JOB', 'KWF_STEP', 'KWF_ATTEMPT', 'KWF_NAMESPACE')]\n"
        "json.dump({'output': {'repo': params['repo'], 'who': who},\n"
        "           'state': {'counter': state['counter'] + 1}}, open(os.environ['KWF_RESULT'], 'w'))\n"
    )
    result = await run_step(step, inputs, 3)
    assert result.output == {"repo": "nolar/kopf", "who": ["run-1", "s", "3", "ns"]}
    assert result.state == {"counter": 2}


async def test_stdout_is_the_output_without_a_result_file(inputs: Inputs) -> None:
    result = await run_step(shell("echo '  42  '\necho done >&2"), inputs, 1)
    assert result.output == "42"
    assert result.state is None


async def test_environment_is_minimal(inputs: Inputs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KWF_OUTSIDE_SECRET", "do-not-leak")
    step = python(
        "import json, os\nprint(json.dumps(dict(os.environ)))",
        env=[
            {"name": "GREETING", "value": "hi"},
            {"name": "TOKEN", "secretKeyRef": {"name": "s", "key": "k"}},
        ],
    )
    result = await run_step(step, inputs, 1, env={"TOKEN": "resolved"})
    env = json.loads(result.output)
    assert set(env) - {"LC_CTYPE"} == {
        "PATH", "HOME", "TMPDIR", "LANG", "GREETING", "TOKEN",
        "KWF_JOB", "KWF_STEP", "KWF_ATTEMPT", "KWF_NAMESPACE", "KWF_PARAMS", "KWF_STATE", "KWF_RESULT",
    }  # fmt: skip
    assert env["GREETING"] == "hi" and env["TOKEN"] == "resolved"
    assert env["HOME"] == env["TMPDIR"] == str(Path(env["KWF_RESULT"]).parent)


async def test_each_run_gets_its_own_directory_removed_after(inputs: Inputs) -> None:
    step = shell("pwd; touch mine")
    first = await run_step(step, inputs, 1)
    second = await run_step(step, inputs, 1)
    assert first.output != second.output
    assert not await asyncio.to_thread(Path(str(first.output)).exists)


async def test_non_zero_exit_fails_with_the_tail_of_stderr(inputs: Inputs) -> None:
    step = python(
        "import sys\n"
        "print('x' * 5000, file=sys.stderr)\n"
        "print('the real reason', file=sys.stderr)\n"
        "sys.exit(3)"
    )
    with pytest.raises(StepError) as caught:
        await run_step(step, inputs, 1)
    assert "exited with code 3" in caught.value.message
    assert caught.value.message.endswith("the real reason")
    assert len(caught.value.message) < 1000


async def test_shell_stops_at_the_first_failing_command(inputs: Inputs) -> None:
    with pytest.raises(StepError, match="exited with code 1"):
        await run_step(shell("false\necho reached"), inputs, 1)


async def test_timeout_kills_the_script_and_its_children(inputs: Inputs, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    step = shell(f"sleep 60 &\necho $! > {pid_file}\nsleep 60", timeoutSeconds=1)
    with pytest.raises(StepError, match="timed out after 1 seconds"):
        await run_step(step, inputs, 1)
    child = int(pid_file.read_text())
    assert await asyncio.to_thread(ends_within, child, 10)


def ends_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for its new parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_stdout_over_the_cap_without_result_fails(inputs: Inputs) -> None:
    limits = Limits(result_bytes=1000)
    with pytest.raises(StepError, match="standard output is over 1000 bytes"):
        await run_step(python("print('y' * 5000)"), inputs, 1, limits=limits)


async def test_noisy_stdout_is_fine_with_a_result_file(inputs: Inputs) -> None:
    step = python(
        "import json, os\nprint('y' * 5000)\njson.dump({'output': 1}, open(os.environ['KWF_RESULT'], 'w'))"
    )
    result = await run_step(step, inputs, 1, limits=Limits(result_bytes=1000))
    assert result.output == 1


async def test_result_file_over_the_cap_names_both_sizes(inputs: Inputs) -> None:
    step = python("import json, os\njson.dump({'output': 'z' * 3000}, open(os.environ['KWF_RESULT'], 'w'))")
    with pytest.raises(StepError, match=r"is 3014 bytes, over the cap of 1000 bytes"):
        await run_step(step, inputs, 1, limits=Limits(result_bytes=1000))


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("not json", "not valid JSON"),
        ('{"output": 1, "extra": 2}', "unknown field"),
        ('{"state": [1]}', "result.state must be a JSON object"),
    ],
)
async def test_bad_result_file_fails_clearly(inputs: Inputs, written: str, problem: str) -> None:
    step = shell(f"printf '%s' '{written}' > \"$KWF_RESULT\"")
    with pytest.raises(StepError, match=problem):
        await run_step(step, inputs, 1)


async def test_container_needs_a_cluster_unless_allowed(inputs: Inputs) -> None:
    step = make_step(container={"image": "alpine:3", "command": ["sh", "-c", "echo from-container"]})
    with pytest.raises(StepError, match=r"needs a cluster.*--allow-container-local"):
        await run_step(step, inputs, 1)
    result = await run_step(step, inputs, 1, allow_container_local=True)
    assert result.output == "from-container"


async def test_container_with_the_runner_image_runs_here(
    inputs: Inputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KWF_RUNNER_IMAGE", "kwf-runner:dev")
    step = make_step(
        container={"image": "kwf-runner:dev", "command": ["sh", "-c"], "args": ['echo "$KWF_STEP"']}
    )
    assert (await run_step(step, inputs, 1)).output == "s"
