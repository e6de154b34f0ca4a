"""Templates are bounded while they render, and cannot move a URL to another host."""

from __future__ import annotations

import time
import tracemalloc
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kwf.api import JobPhase, Step, StepPhase
from kwf.engine import templates
from kwf.engine.templates import TemplateError, render_step

from .plan_builders import Run, job, step

BIG = "x" * (200 * 1024)


def test_a_repeated_large_value_stops_rendering_at_the_budget() -> None:
    # 2,000 copies of 200 KiB: 400 MiB if rendered whole before any check
    value = "{{ state.big }}" * 2000
    spec = Step.model_validate(
        {"name": "s", "container": {"image": "i"}, "env": [{"name": "X", "value": value}]}
    )
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(TemplateError) as error:
            render_step(spec, {"state": {"big": BIG}})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 0.5
    assert peak < 4 * 1024 * 1024
    assert str(error.value) == (
        "step s: env[0].value: rendering passed 409,600 bytes, over the limit of 262,144 bytes "
        "for a rendered step; pass large values through $KWF_STATE or $KWF_PARAMS instead"
    )


def test_whole_values_in_a_json_field_count_too() -> None:
    body = ["{{ state.items }}"] * 1000
    spec = Step.model_validate({"name": "s", "http": {"url": "https://x.test/", "body": body}})
    with pytest.raises(TemplateError, match=r"step s: http\.body\[\d+\]: rendering passed"):
        render_step(spec, {"state": {"items": [BIG[:1000]] * 100}})


def test_a_step_over_the_budget_fails_once() -> None:
    run = Run(
        job(
            step("a"),
            {"name": "b", "dependsOn": ["a"], "container": {"image": "i", "args": ["{{ state.big }}"] * 2}},
        )
    )
    run.plan()
    run.finish("a", state={"big": "y" * (150 * 1024)})
    run.plan()
    assert run.phases()["b"] == StepPhase.FAILED
    assert run.status.phase is JobPhase.FAILED
    message = run.step("b").message or ""
    assert message.startswith("step b: container.args[1]: rendering passed 307,200 bytes, over the limit")
    entry = run.step("b")
    run.tick(10)
    run.plan()
    assert run.step("b") == entry
    assert [name for name, _ in run.launched] == ["a"]


URL_DATA: dict[str, Any] = {"params": {"p": "a/../../b?x=1#y", "q": "a&b=c#d e", "host": "evil.test"}}


def test_values_in_a_url_are_percent_encoded() -> None:
    spec = Step.model_validate(
        {"name": "s", "http": {"url": "https://api.test/repos/{{ params.p }}?q={{ params.q }}&r=1"}}
    )
    rendered = render_step(spec, URL_DATA)
    assert rendered.http is not None
    assert rendered.http.url == "https://api.test/repos/a/%2E%2E/%2E%2E/b%3Fx%3D1%23y?q=a%26b%3Dc%23d%20e&r=1"


@pytest.mark.parametrize(
    ("field", "url"),
    [
        ("http.url", "{{ params.host }}/x"),
        ("http.url", "https://{{ params.host }}/x"),
        ("http.url", "https://api.test{{ params.p }}"),
        ("http.url", "https://api.test:{{ params.p }}/x"),
        ("http.url", "{{ params.p }}://api.test/x"),
        ("llm.baseURL", "{{ params.host }}"),
        ("llm.baseURL", "http://{{ params.host }}:8080/v1"),
    ],
)
def test_a_template_in_the_scheme_or_host_is_refused(field: str, url: str) -> None:
    kind, _ = field.split(".")
    body: dict[str, Any] = {"url": url} if kind == "http" else {"baseURL": url, "model": "m", "prompt": "p"}
    spec = Step.model_validate({"name": "s", kind: body})
    (problem,) = templates.problems(spec)
    assert problem.startswith(f"step s: {field}: {url!r}: write the scheme and host out")
    with pytest.raises(
        TemplateError, match=f"step s: {field}: .*a template may fill only the path and query"
    ):
        render_step(spec, URL_DATA)


def test_a_template_in_the_path_of_a_base_url_is_rendered() -> None:
    spec = Step.model_validate(
        {"name": "s", "llm": {"baseURL": "http://127.0.0.1:8080/{{ params.p }}", "model": "m", "prompt": "p"}}
    )
    assert templates.problems(spec) == []
    rendered = render_step(spec, URL_DATA)
    assert rendered.llm is not None and rendered.llm.base_url is not None
    assert urlsplit(rendered.llm.base_url).netloc == "127.0.0.1:8080"


@given(st.text(max_size=40), st.text(max_size=40))
def test_no_value_changes_where_a_url_points(path: str, query: str) -> None:
    spec = Step.model_validate(
        {"name": "s", "http": {"url": "https://api.test:8443/v1/{{ params.a }}?q={{ params.b }}"}}
    )
    rendered = render_step(spec, {"params": {"a": path, "b": query}})
    assert rendered.http is not None
    parts = urlsplit(rendered.http.url)
    assert (parts.scheme, parts.hostname, parts.port) == ("https", "api.test", 8443)
    assert parts.path.startswith("/v1/") and "/../" not in parts.path + "/"
    assert parts.query.startswith("q=") and "&" not in parts.query and not parts.fragment
