"""kwf lint: every kind of problem, each reported with its file and path."""

from __future__ import annotations

import textwrap
from pathlib import Path

from kwf.local.lint import Problem, lint_file, lint_paths

HEAD = "apiVersion: workflow.kwf.dev/v1alpha1\nkind: Job\nmetadata: {name: t}\n"


def lint(tmp_path: Path, text: str, name: str = "run.yaml") -> list[tuple[str, str, str]]:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return [(p.where.removeprefix(str(tmp_path) + "/"), p.path, p.message) for p in lint_file(path)]


def job(steps: str, extra: str = "") -> str:
    return (
        HEAD
        + "spec:\n"
        + textwrap.indent(textwrap.dedent(extra), "  ")
        + "  steps:\n"
        + textwrap.indent(textwrap.dedent(steps), "    ")
    )


def test_every_example_is_clean() -> None:
    examples = Path(__file__).resolve().parents[3] / "examples"
    assert lint_paths([examples]) == []


def test_schema_errors_name_the_field_in_wire_form(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        job(
            """\
            - name: Fetch_Data
              script: {source: x}
            - name: b
              script: {source: x}
              retry: {limit: -1}
              dependOn: [a]
            """
        ),
    )
    paths = {path: message for _, path, message in found}
    assert "pattern" in paths["spec.steps[0].name"]
    assert "greater than or equal to 0" in paths["spec.steps[1].retry.limit"]
    assert "Extra inputs" in paths["spec.steps[1].dependOn"]


def test_crd_cel_rules_are_checked_too(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        job(
            """\
            - name: both
              script: {source: x}
              http: {url: "http://example.test"}
            - name: inline-script
              executor: inline
              script: {source: x}
            - name: env
              script: {source: x}
              env: [{name: A}]
            """
        ),
    )
    assert ("run.yaml", "spec.steps[0]", "a step has exactly one of script, container, http, llm") in found
    assert ("run.yaml", "spec.steps[1]", "executor inline is only for http and llm steps") in found
    assert ("run.yaml", "spec.steps[2].env[0]", "set exactly one of value or secretKeyRef") in found


def test_job_needs_steps_or_workflow_ref(tmp_path: Path) -> None:
    found = lint(tmp_path, HEAD + "spec:\n  params: {a: 1}\n")
    assert found == [("run.yaml", "spec", "set exactly one of workflowRef or steps")]


def test_graph_problems_point_at_the_step(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        job(
            """\
            - name: a
              dependsOn: [ghost]
              script: {source: x}
            - name: b
              when: "state.("
              script: {source: x}
            - name: a
              script: {source: x}
            """
        ),
    )
    paths = {path: message for _, path, message in found}
    assert "ghost" in paths["spec.steps[0].dependsOn"]
    assert "does not parse" in paths["spec.steps[1].when"]
    assert "duplicate step name 'a'" in paths["spec.steps[2].name"]


def test_a_cycle_names_its_steps(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        job(
            """\
            - {name: a, dependsOn: [c], script: {source: x}}
            - {name: b, dependsOn: [a], script: {source: x}}
            - {name: c, dependsOn: [b], script: {source: x}}
            """
        ),
    )
    assert len(found) == 1
    _, path, message = found[0]
    assert path == "spec.steps"
    assert message.startswith("cycle: ") and all(name in message for name in "abc")


def test_yaml_11_booleans_are_reported_by_path(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        job(
            """\
            - name: a
              script: {source: x}
            """,
            extra="""\
            params:
              country: NO
              confirm: y
              "on": 1
              quoted: "yes"
              real: true
              text: norway
            initialState:
              off: 0
            """,
        ),
    )
    traps = {path: message for _, path, message in found if "YAML 1.1" in message}
    assert set(traps) == {"spec.params.country", "spec.params.confirm", "spec.initialState.off"}
    assert "value 'NO'" in traps["spec.params.country"] and "false" in traps["spec.params.country"]
    assert "value 'y'" in traps["spec.params.confirm"] and "true" in traps["spec.params.confirm"]
    assert "key 'off'" in traps["spec.initialState.off"]
    assert "line " in traps["spec.params.confirm"]


def test_multi_document_files_name_the_document(tmp_path: Path) -> None:
    text = (
        HEAD
        + "spec: {steps: [{name: a, script: {source: x}}]}\n---\n"
        + "apiVersion: workflow.kwf.dev/v1alpha1\nkind: Workflow\nmetadata: {name: w}\nspec: {steps: []}\n"
        + "---\nkind: CronJob\n"
    )
    found = lint(tmp_path, text)
    assert ("run.yaml#2", "spec.steps", "List should have at least 1 item after validation, not 0") in found
    assert any(where == "run.yaml#3" and path == "kind" and "CronJob" in msg for where, path, msg in found)
    assert not any(where == "run.yaml#1" for where, _, _ in found)


def test_unreadable_yaml_and_empty_files(tmp_path: Path) -> None:
    broken = lint(tmp_path, "spec: [unclosed\n", name="broken.yaml")
    assert len(broken) == 1 and broken[0][0] == "broken.yaml" and "not valid YAML" in broken[0][2]
    assert lint(tmp_path, "# nothing\n", name="empty.yaml") == [
        ("empty.yaml", "", "no Job or Workflow in the file")
    ]


def test_problem_line_format() -> None:
    problem = Problem("a.yaml", "spec.steps[0].name", "bad")
    assert str(problem) == "a.yaml: spec.steps[0].name: bad"
    assert str(Problem("a.yaml", "", "empty")) == "a.yaml: (document): empty"


def test_a_template_in_script_source_points_to_the_input_files(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        job(
            """\
            - name: a
              script: {language: shell, source: 'echo "{{ params.who }}"'}
            - name: b
              http: {url: "https://x.test/{{ params.who }}"}
              env: [{name: WHO, value: "{{ params.who }}"}]
            """
        ),
    )
    assert [(path, message) for _, path, message in found] == [
        (
            "spec.steps[0].script.source",
            "templates are not rendered into code: read params from $KWF_PARAMS and state from $KWF_STATE"
            " (a literal {{ is refused too: build it in code)",
        )
    ]


def test_every_workflow_in_the_docs_is_clean(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[3]
    blocks = [
        block.split("\n", 1)[1]
        for doc in [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]
        for block in doc.read_text(encoding="utf-8").split("```")[1::2]
        if block.startswith("yaml") and "apiVersion: workflow.kwf.dev/" in block
    ]
    assert len(blocks) >= 2
    for index, block in enumerate(blocks):
        assert lint(tmp_path, block, name=f"doc{index}.yaml") == [], block
