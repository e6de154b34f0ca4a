"""Templates: data lookups rendered into the parsed spec, never code."""

from __future__ import annotations

from typing import Any

import pytest

from kwf.api import Step
from kwf.engine import templates
from kwf.engine.templates import TemplateError, render_step

DATA: dict[str, Any] = {
    "params": {"repo": "nolar/kopf", "n": 3, "tags": ["a", "b"], "evil": "{{ params.repo }}"},
    "state": {"user": {"name": "ann"}},
    "steps": {"fetch": {"phase": "Succeeded", "output": {"title": "T", "items": [1, 2]}}},
}


def test_strings_are_rendered_in_every_field() -> None:
    step = Step.model_validate(
        {
            "name": "post",
            "http": {
                "method": "POST",
                "url": "https://x.test/{{ params.repo }}?n={{ params.n }}",
                "headers": {"X-User": "{{ state.user.name }}"},
            },
            "env": [{"name": "TITLE", "value": "{{ steps.fetch.output.title }}"}],
        }
    )
    rendered = render_step(step, DATA)
    assert rendered.http is not None and rendered.env is not None
    assert rendered.http.url == "https://x.test/nolar/kopf?n=3"
    assert rendered.http.headers == {"X-User": "ann"}
    assert rendered.env[0].value == "T"


def test_a_whole_string_template_keeps_its_type_in_a_json_field() -> None:
    step = Step.model_validate(
        {
            "name": "post",
            "http": {
                "url": "https://x.test",
                "body": {"items": "{{ steps.fetch.output.items }}", "n": "n={{ params.n }}"},
            },
        }
    )
    rendered = render_step(step, DATA)
    assert rendered.http is not None
    assert rendered.http.body == {"items": [1, 2], "n": "n=3"}


def test_non_strings_inside_text_are_json() -> None:
    step = Step.model_validate({"name": "s", "container": {"image": "i", "args": ["tags={{ params.tags }}"]}})
    assert render_step(step, DATA).container.args == ['tags=["a", "b"]']  # type: ignore[union-attr]


def test_a_rendered_value_is_not_rendered_again() -> None:
    step = Step.model_validate({"name": "s", "container": {"image": "i", "args": ["echo {{ params.evil }}"]}})
    assert render_step(step, DATA).container.args == ["echo {{ params.repo }}"]  # type: ignore[union-attr]


def test_structure_is_never_rendered() -> None:
    step = Step.model_validate(
        {"name": "s", "dependsOn": ["a"], "when": "params.n > 1", "script": {"source": "x"}}
    )
    assert render_step(step, DATA) is step


def test_a_missing_key_is_an_error_naming_it() -> None:
    step = Step.model_validate({"name": "fetch2", "http": {"url": "https://x.test/{{ state.user.mail }}"}})
    with pytest.raises(TemplateError) as error:
        render_step(step, DATA)
    assert str(error.value) == (
        "step fetch2: http.url: no key 'mail' in state.user (template {{ state.user.mail }})"
    )


def test_other_braces_stay_text() -> None:
    source = 'print(f"{{x}}")\necho {{ .Values.x }} {{ a b }} {{'
    assert templates.parse(source) is None


def test_a_dotted_path_with_another_root_is_a_mistake() -> None:
    with pytest.raises(TemplateError, match="not 'parms'"):
        templates.parse("{{ parms.x }}")


def test_an_output_kept_as_a_preview_cannot_be_used() -> None:
    data = {"steps": {"big": {"output": {templates.TRUNCATED: "300 KiB"}}}}
    with pytest.raises(TemplateError, match=r"steps\.big was too large to keep"):
        templates.render_string("{{ steps.big.output }}", data)


def test_a_rendered_spec_is_validated() -> None:
    step = Step.model_validate({"name": "s", "container": {"image": "{{ params.empty }}"}})
    with pytest.raises(TemplateError, match="step s: the rendered spec is not valid"):
        render_step(step, {"params": {"empty": ""}})
