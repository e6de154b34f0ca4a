"""Random and hostile specs through the models and kwf.engine.validation.

Whatever a tenant writes or a step returns: model validation raises nothing
but pydantic's ValidationError, each refusal names its field, validation's
problems never raise, and what the models accept the CRD's CEL rules accept
too (so admission is never stricter than every other reader of a spec)."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kwf.api import Job, Step, Workflow, bounds
from kwf.api.models import Model
from kwf.engine import templates
from kwf.engine.validation import problems
from tests.unit.api.admission import refusals

JSON = Any

SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
)


def nested(levels: int, leaf: JSON = 1) -> JSON:
    value = leaf
    for level in range(levels):
        value = {"a": value} if level % 2 else [value]
    return value


HUGE = st.sampled_from([0, 1, 253, 254, 8193, 65537, 262145, 300_000]).map(lambda n: "x" * n)
DEEP = st.integers(0, 300).map(nested)
NAMES = st.sampled_from(
    ["a", "fetch", "Fetch", "a_b", "-a", "a" * 64, "../../kube-system/secrets/x", "é", "", "..", ".", "a.b"]
)
HOSTILE = st.one_of(SCALARS, JSON_VALUES, HUGE, DEEP, NAMES, st.text(), st.floats(allow_nan=True))


def maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``value``, one time in eight anything at all, so that some specs pass."""
    return st.integers(0, 7).flatmap(lambda n: HOSTILE if n == 0 else value)


SECRET_REFS = st.fixed_dictionaries({"name": maybe(NAMES), "key": maybe(NAMES)})
STEP_PARTS: dict[str, st.SearchStrategy[Any]] = {
    "dependsOn": maybe(st.lists(NAMES, max_size=3)),
    "when": maybe(st.sampled_from(["params.n > 1", "state.(", "x" * 5000])),
    "script": maybe(
        st.fixed_dictionaries(
            {"source": maybe(st.sampled_from(["print(1)", "echo {{ params.x }}", 'f"{{x}}"']))},
            optional={"language": maybe(st.sampled_from(["python", "shell", "ruby"]))},
        )
    ),
    "container": maybe(
        st.fixed_dictionaries({"image": maybe(NAMES)}, optional={"args": maybe(st.lists(HUGE, max_size=3))})
    ),
    "http": maybe(
        st.fixed_dictionaries(
            {"url": maybe(st.just("http://x.test/{{ params.a }}"))},
            optional={
                "body": HOSTILE,
                "headers": maybe(st.dictionaries(st.text(max_size=5), HUGE, max_size=3)),
                "expectedStatus": maybe(st.lists(st.integers(-1, 1000), max_size=3)),
            },
        )
    ),
    "llm": maybe(
        st.fixed_dictionaries(
            {"model": maybe(NAMES)},
            optional={
                "prompt": maybe(HUGE),
                "messages": maybe(
                    st.lists(st.fixed_dictionaries({"role": NAMES, "content": HUGE}), max_size=2)
                ),
                "apiKeySecretRef": maybe(SECRET_REFS),
            },
        )
    ),
    "env": maybe(
        st.lists(
            st.fixed_dictionaries(
                {"name": maybe(NAMES)}, optional={"value": HUGE, "secretKeyRef": SECRET_REFS}
            ),
            max_size=3,
        )
    ),
    "retry": maybe(
        st.fixed_dictionaries(
            {},
            optional={
                "limit": HOSTILE,
                "backoff": st.dictionaries(st.sampled_from(["factor", "seconds"]), HOSTILE),
            },
        )
    ),
    "executor": maybe(st.sampled_from(["pod", "inline"])),
    "timeoutSeconds": HOSTILE,
    "saveAs": maybe(NAMES),
    "onFailure": maybe(NAMES),
    "resources": maybe(
        st.fixed_dictionaries({}, optional={"limits": st.dictionaries(NAMES, NAMES, max_size=2)})
    ),
    "surprise": HOSTILE,  # no such field
}
TYPES = ("script", "container", "http", "llm")
GOOD_NAMES = st.sampled_from(["a", "fetch", "b-2", "x" * 63])


@st.composite
def steps(draw: st.DrawFn) -> Any:
    """A step of one type with a few other parts, any of which may be hostile."""
    step = {"name": draw(maybe(GOOD_NAMES))}
    kind = draw(st.sampled_from(TYPES))
    step[kind] = draw(STEP_PARTS[kind])
    for part in draw(st.lists(st.sampled_from(sorted(STEP_PARTS)), max_size=3, unique=True)):
        step[part] = draw(STEP_PARTS[part])
    return step


STEPS = maybe(steps())
OBJECTS = st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=3)
SPECS = st.fixed_dictionaries(
    {"steps": maybe(st.lists(STEPS, min_size=1, max_size=3))},
    optional={
        "workflowRef": maybe(st.fixed_dictionaries({"name": maybe(NAMES)})),
        "params": maybe(OBJECTS),
        "initialState": maybe(OBJECTS),
        "parallelism": maybe(st.integers(1, 10)),
        "schedule": maybe(
            st.fixed_dictionaries({"cron": st.just("@daily")}, optional={"params": maybe(OBJECTS)})
        ),
    },
)
DOCUMENTS = st.fixed_dictionaries(
    {"kind": maybe(st.sampled_from(["Job", "Workflow"])), "spec": maybe(SPECS)},
    optional={
        "apiVersion": maybe(st.just("workflow.kwf.dev/v1alpha1")),
        "metadata": maybe(st.fixed_dictionaries({"name": GOOD_NAMES})),
    },
)

STEP_RULE_MESSAGES = {rule.message for rule in Step.RULES}
HYPOTHESIS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@HYPOTHESIS
@given(STEPS)
def test_a_step_is_parsed_or_refused_naming_the_field(data: Any) -> None:
    try:
        Step.model_validate(data)
    except pydantic.ValidationError as error:
        for problem in error.errors():
            # Only the step as a whole has no field of its own: not an object at all,
            # or a rule across its fields, whose message names them.
            whole = problem["type"] == "model_type" or problem["msg"] in STEP_RULE_MESSAGES
            assert problem["loc"] or whole, problem


@HYPOTHESIS
@given(DOCUMENTS)
def test_a_document_is_parsed_or_refused_naming_the_field(data: dict[str, Any]) -> None:
    model = Workflow if data.get("kind") == "Workflow" else Job
    try:
        model.model_validate(data)
    except pydantic.ValidationError as error:
        assert all(problem["loc"] for problem in error.errors()), error.errors()
    found = problems(data)
    assert all(problem.field and problem.message for problem in found), found


@HYPOTHESIS
@given(DOCUMENTS)
def test_what_the_models_accept_the_crd_rules_accept(data: dict[str, Any]) -> None:
    if data.get("kind") not in ("Job", "Workflow") or problems(data):
        return
    parsed = (Job if data["kind"] == "Job" else Workflow).model_validate(data)
    plural = "jobs" if data["kind"] == "Job" else "workflows"
    assert refusals(plural, {"spec": parsed.spec.dump()}) == []


@st.composite
def plausible_steps(draw: st.DrawFn, index: int) -> dict[str, Any]:
    """A step that is valid but for the rules across fields, which it may break."""
    step: dict[str, Any] = {"name": f"s{index}", "executor": draw(st.sampled_from(["pod", "inline"]))}
    bodies = {
        "script": {"source": draw(st.sampled_from(["x", "echo {{ params.a }}", "{ {", "}}{{"]))},
        "container": {"image": "busybox"},
        "http": {"url": "http://x.test/{{ params.a }}"},
        "llm": {
            "model": "m",
            **draw(st.fixed_dictionaries({}, optional={"prompt": st.just("p"), "messages": st.just([])})),
        },
    }
    for kind in draw(st.lists(st.sampled_from(TYPES), max_size=2, unique=True)):
        step[kind] = bodies[kind]
    env = draw(
        st.lists(
            st.fixed_dictionaries(
                {"name": st.just("A")}, optional={"value": st.just("v"), "secretKeyRef": SECRET_REFS_OK}
            ),
            max_size=2,
        )
    )
    if env:
        step["env"] = env
    return step


SECRET_REFS_OK = st.fixed_dictionaries({"name": st.just("s"), "key": st.just("k")})
PLAUSIBLE = st.integers(1, 3).flatmap(lambda n: st.tuples(*(plausible_steps(i) for i in range(n))))


@HYPOTHESIS
@given(st.sampled_from(["Job", "Workflow"]), PLAUSIBLE)
def test_the_models_and_the_crd_rules_agree(kind: str, steps: tuple[dict[str, Any], ...]) -> None:
    document = {"kind": kind, "spec": {"steps": list(steps)}}
    by_model = {(problem.field, problem.message) for problem in problems(document)}
    by_crd = set(refusals("jobs" if kind == "Job" else "workflows", document))
    assert bool(by_model) == bool(by_crd), (by_model, by_crd)
    # A step breaking two rules gets the first from the models, both from the API server.
    assert by_model <= by_crd


@given(st.text(alphabet=st.sampled_from(list("{} .params.stae.x_-\t\u00a0\u2003ab")), max_size=40))
def test_script_source_refuses_all_the_renderer_would_read_as_a_template(source: str) -> None:
    try:
        read = templates.parse(source) is not None
    except templates.TemplateError:
        read = True
    if read:
        with pytest.raises(pydantic.ValidationError, match="templates are not rendered into code"):
            Step.model_validate({"name": "a", "script": {"source": source}})


def spec_with(**fields: Any) -> dict[str, Any]:
    return {"kind": "Job", "spec": {"steps": [{"name": "a", "script": {"source": "x"}}], **fields}}


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"params": {"deep": nested(250)}}, "spec.params", "nested 251 deep, at most 32"),
        ({"params": {"big": "x" * bounds.PARAMS_BYTES}}, "spec.params", "at most 64 KiB"),
        ({"initialState": {"deep": nested(40)}}, "spec.initialState", "nested 41 deep, at most 32"),
        ({"initialState": {"big": "é" * bounds.INITIAL_STATE_BYTES}}, "spec.initialState", "512 KiB as JSON"),
        ({"params": {"n": float("nan")}}, "spec.params", "not JSON"),
        ({"params": {"s": {1, 2}}}, "spec.params", "not JSON"),
        ({"params": {str(i): i for i in range(bounds.MAX_KEYS + 1)}}, "spec.params", "at most 1024"),
    ],
    ids=[
        "params-deep",
        "params-big",
        "state-deep",
        "state-big-utf8",
        "params-nan",
        "params-set",
        "params-keys",
    ],
)
def test_free_form_json_is_bounded_naming_the_field(fields: dict[str, Any], field: str, words: str) -> None:
    (problem,) = problems(spec_with(**fields))
    assert problem.field == field and words in problem.message, problem


def test_free_form_json_at_the_bounds_is_accepted() -> None:
    at_depth = nested(bounds.MAX_DEPTH - 1)  # params itself is the first level
    text = "x" * (bounds.PARAMS_BYTES - len('{"s":""}'))
    assert problems(spec_with(params={"deep": at_depth})) == []
    assert problems(spec_with(params={"s": text})) == []
    assert problems(spec_with(params={"s": text + "x"}))
    # YAML reads an unquoted date as a date; the API server gets a string
    import datetime

    assert problems(spec_with(params={"day": datetime.date(2030, 1, 1)})) == []


def test_a_body_and_schedule_params_are_bounded_too() -> None:
    step = {"name": "a", "http": {"url": "http://x.test", "body": nested(100)}}
    (problem,) = problems({"kind": "Job", "spec": {"steps": [step]}})
    assert problem.field == "spec.steps[0].http.body" and "nested 100 deep" in problem.message
    flow = {
        "kind": "Workflow",
        "spec": {
            "steps": [{"name": "a", "script": {"source": "x"}}],
            "schedule": {"cron": "@daily", "params": {"d": nested(60)}},
        },
    }
    (problem,) = problems(flow)
    assert problem.field == "spec.schedule.params"


def test_every_model_of_a_spec_refuses_nan_and_infinity() -> None:
    assert all(cls.model_config.get("allow_inf_nan") is False for cls in Model.__subclasses__())
    step = {"name": "a", "script": {"source": "x"}, "retry": {"backoff": {"seconds": float("inf")}}}
    (problem,) = problems({"kind": "Job", "spec": {"steps": [step]}})
    assert problem.field == "spec.steps[0].retry.backoff.seconds"
