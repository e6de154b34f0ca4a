"""``python -m kwf.steps`` run as a step pod runs it: inputs in KWF_INPUT_* variables,
the result in the termination message file, large results framed on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kwf.engine.types import Result
from kwf.steps import EXIT_BAD_INPUTS, EXIT_FAILED, EXIT_SUCCEEDED, encode_inputs, read_framed, read_report
from kwf.steps.results import Failure, Framed, report_error
from tests.fakes import FakeOpenAI, Reply, ScriptedServer
from tests.unit.steps.conftest import make_step

OPERATOR = Path(__file__).resolve().parents[3] / "operator"


def run_pod(
    tmp_path: Path, spec: dict[str, Any], *, state: dict[str, Any] | None = None, **extra: str
) -> tuple[int, str, str]:
    """Run the entrypoint with only what a pod's container gets; returns exit code,
    termination message and stdout (the pod log)."""
    termination = tmp_path / "termination-log"
    workdir = tmp_path / "tmp"
    workdir.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(OPERATOR),
        "TMPDIR": str(workdir),
        "KWF_JOB": "digest-1",
        "KWF_NAMESPACE": "default",
        "KWF_STEP": spec["name"],
        "KWF_ATTEMPT": "2",
        "KWF_RESULT": str(termination),
        **encode_inputs(make_step(**spec), {"repo": "nolar/kopf"}, state or {"counter": 1}),
        **extra,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "kwf.steps"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    message = termination.read_text() if termination.exists() else ""
    return proc.returncode, message, proc.stdout


def python_step(source: str) -> dict[str, Any]:
    return {"name": "count", "script": {"language": "python", "source": source}}


WRITE = "import json, os\njson.dump({result}, open(os.environ['KWF_RESULT'], 'w'))\n"


def test_a_small_result_goes_to_the_termination_message(tmp_path: Path) -> None:
    source = (
        "import json, os\n"
        "state = json.load(open(os.environ['KWF_STATE']))\n"
        "print('working on', os.environ['KWF_STEP'], os.environ['KWF_ATTEMPT'])\n"
        "result = {'output': 'ok', 'state': {'counter': state['counter'] + 1}}\n"
        "json.dump(result, open(os.environ['KWF_RESULT'], 'w'))\n"
    )
    code, message, stdout = run_pod(tmp_path, python_step(source))
    assert code == EXIT_SUCCEEDED
    assert json.loads(message) == {"output": "ok", "state": {"counter": 2}}
    assert read_report(message, code) == Result(output="ok", state={"counter": 2})
    assert "working on count 2" in stdout  # the step's own output stays in the log


def test_a_large_result_is_framed_on_stdout(tmp_path: Path) -> None:
    source = WRITE.format(result="{'output': 'x' * 100_000}") + "print('after the result')\n"
    code, message, stdout = run_pod(tmp_path, python_step(source), state={"big": "y" * 300_000})
    assert code == EXIT_SUCCEEDED
    assert len(message) < 200
    report = read_report(message, code)
    assert isinstance(report, Framed) and report.bytes == len('{"output":""}') + 100_000
    assert read_framed(report, stdout) == Result(output="x" * 100_000)


def test_a_result_over_the_cap_fails_naming_both_sizes(tmp_path: Path) -> None:
    source = WRITE.format(result="{'output': 'x' * 10_000}")
    code, message, _ = run_pod(tmp_path, python_step(source), KWF_RESULT_BYTES="8000")
    assert code == EXIT_FAILED
    assert read_report(message, code) == Failure(
        "the result in $KWF_RESULT is 10014 bytes, over the cap of 8000 bytes"
    )


def test_an_output_over_the_cap_fails_naming_both_sizes(tmp_path: Path) -> None:
    with ScriptedServer({"/big": Reply(200, "z" * 9000)}) as server:
        spec = {"name": "fetch", "http": {"url": f"{server.url}/big", "select": "body"}}
        code, message, stdout = run_pod(tmp_path, spec, KWF_RESULT_BYTES="8000")
    assert code == EXIT_FAILED
    assert read_report(message, code) == Failure("the result is 9013 bytes, over the cap of 8000 bytes")
    assert "kwf result begin" not in stdout


def test_a_failing_step_reports_its_error(tmp_path: Path) -> None:
    code, message, _ = run_pod(tmp_path, python_step("raise SystemExit('no such repo')"))
    assert code == EXIT_FAILED
    assert read_report(message, code) == Failure("the step exited with code 1: no such repo")


def test_a_long_error_still_fits_the_termination_message(tmp_path: Path) -> None:
    code, message, _ = run_pod(tmp_path, {"name": "s", "http": {"url": "http://127.0.0.1:1/" + "p" * 6000}})
    assert code == EXIT_FAILED
    assert len(message.encode()) <= 4096
    report = read_report(message, code)
    assert isinstance(report, Failure) and report.message.startswith("GET http://127.0.0.1:1/ppp")
    assert "failed: ConnectError" in report.message


def test_broken_inputs_are_told_apart_from_step_failures(tmp_path: Path) -> None:
    code, message, _ = run_pod(tmp_path, python_step("print(1)"), KWF_INPUT_0="garbage")
    assert code == EXIT_BAD_INPUTS
    report = read_report(message, code)
    assert isinstance(report, Failure) and report.message.startswith("cannot run the step: KWF_INPUT_0..")


def test_an_llm_step_gets_its_key_from_the_pod_environment(tmp_path: Path) -> None:
    key = "sk-pod-9d1e-secret"
    with FakeOpenAI(api_key=key) as server:
        spec = {
            "name": "summarize",
            "llm": {
                "baseURL": server.base_url,
                "model": "gpt-4o-mini",
                "prompt": "one line please",
                "apiKeySecretRef": {"name": "openai", "key": "api-key"},
            },
        }
        code, message, stdout = run_pod(tmp_path, spec, KWF_LLM_API_KEY=key)
    assert code == EXIT_SUCCEEDED
    report = read_report(message, code)
    assert isinstance(report, Result) and report.output == "Answer: one line please"
    assert report.usage["gpt-4o-mini"].total_tokens == 3 + 4
    assert key not in message and key not in stdout


@pytest.mark.parametrize(("message", "code"), [("", 0), ('{"output": null}', 0)])
def test_an_empty_answer_is_a_null_output(message: str, code: int) -> None:
    assert read_report(message, code) == Result()


def test_a_crash_without_a_message_is_a_failure_with_the_exit_code() -> None:
    assert read_report("", 137) == Failure("the step exited with code 137")


def test_a_long_error_is_cut_in_the_middle_to_fit() -> None:
    message = "what failed: " + "x" * 20_000 + " why: the real reason"
    report = report_error(message)
    assert len(report.message.encode()) <= 4096
    error = json.loads(report.message)["error"]
    assert error.startswith("what failed: ") and error.endswith("why: the real reason")
    assert " ... " in error
