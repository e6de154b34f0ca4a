"""The kwf command line: exit codes, -o json, -p/--state parsing, lint output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import kwf
from kwf.cli import app, parse_assignments

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
runner = CliRunner()

FAILING = """\
apiVersion: workflow.kwf.dev/v1alpha1
kind: Job
metadata: {name: failing}
spec:
  steps:
    - name: boom
      script: {language: shell, source: "echo no luck >&2; exit 4"}
"""

ECHO = """\
apiVersion: workflow.kwf.dev/v1alpha1
kind: Job
metadata: {name: echo}
spec:
  params: {n: 1}
  steps:
    - name: echo
      script:
        source: |
          import json, os
          p = json.load(open(os.environ["KWF_PARAMS"]))
          s = json.load(open(os.environ["KWF_STATE"]))
          json.dump({"state": {"params": p, "seen": s}}, open(os.environ["KWF_RESULT"], "w"))
"""


def test_assignments_are_json_when_they_parse() -> None:
    values = parse_assignments(["a=1", "b=true", "c=[1, 2]", "d=hello", "e=", 'f="x"', "g=a=b"], "-p")
    assert values == {"a": 1, "b": True, "c": [1, 2], "d": "hello", "e": "", "f": "x", "g": "a=b"}
    with pytest.raises(typer.BadParameter, match="key=value"):
        parse_assignments(["novalue"], "-p")


def test_run_json_output_and_success_exit() -> None:
    result = runner.invoke(app, ["run", str(EXAMPLES / "counter.yaml"), "-o", "json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert {"phase", "progress", "steps", "sharedState", "usage", "outputs"} <= set(status)
    assert status["phase"] == "Succeeded" and status["progress"] == "1/1"
    assert status["sharedState"] == {"counter": 6}
    assert status["steps"][0]["name"] == "increment" and status["steps"][0]["attempts"] == 1


def test_params_and_state_reach_the_steps(tmp_path: Path) -> None:
    path = tmp_path / "echo.yaml"
    path.write_text(ECHO)
    args = ["run", str(path), "-o", "json", "-p", "n=2", "-p", "name=kwf", "--state", 'flags={"a": 1}']
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    state = json.loads(result.stdout)["sharedState"]
    assert state["params"] == {"n": 2, "name": "kwf"}
    assert state["seen"] == {"flags": {"a": 1}}


def test_a_failed_run_exits_1_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "failing.yaml"
    path.write_text(FAILING)
    result = runner.invoke(app, ["run", str(path), "-o", "json"])
    assert result.exit_code == 1
    status = json.loads(result.stdout)
    assert status["phase"] == "Failed"
    assert "no luck" in status["steps"][0]["message"]
    plain = runner.invoke(app, ["run", str(path)])
    assert plain.exit_code == 1
    assert "boom: Failed" in plain.stdout and "run failed" in plain.stdout


def test_a_file_that_cannot_run_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("kind: Job\nspec: {steps: [{name: BAD, script: {source: x}}]}\n")
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    assert "spec.steps[0].name" in result.stderr
    missing = runner.invoke(app, ["run", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2


def test_bad_param_syntax_is_a_usage_error() -> None:
    result = runner.invoke(app, ["run", str(EXAMPLES / "counter.yaml"), "-p", "oops"])
    assert result.exit_code == 2
    assert "key=value" in result.output


def test_plain_progress_lines_when_not_a_terminal() -> None:
    result = runner.invoke(app, ["run", str(EXAMPLES / "diamond.yaml")])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines.index("split: Succeeded") < lines.index("report: Running")
    assert lines[-1] == "run succeeded (4/4 steps)"


def test_lint_prints_each_problem_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "apiVersion: workflow.kwf.dev/v1alpha1\nkind: Job\nmetadata: {name: b}\n"
        "spec:\n  params: {debug: on}\n  steps: [{name: a, dependsOn: [x], script: {source: s}}]\n"
    )
    result = runner.invoke(app, ["lint", str(path), str(EXAMPLES / "counter.yaml")])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"{path}: spec.params.debug: unquoted value 'on'") for line in lines)
    assert any(line.startswith(f"{path}: spec.steps[0].dependsOn: ") for line in lines)
    assert len(lines) == 2
    assert runner.invoke(app, ["lint", str(EXAMPLES)]).exit_code == 0


def test_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and result.stdout.strip() == kwf.__version__


def test_the_installed_command_runs(tmp_path: Path) -> None:
    # The console script, as a user runs it: a real process, stdout not a terminal.
    kwf_bin = Path(sys.executable).parent / "kwf"
    done = subprocess.run(
        [str(kwf_bin), "run", str(EXAMPLES / "counter.yaml"), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sharedState"] == {"counter": 6}
    assert "increment: Succeeded" in done.stderr  # progress on stderr when stdout is JSON
