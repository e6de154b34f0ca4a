"""The admission webhook's answer: an AdmissionReview in, its response out,
with kwf's own validation in between (no server, no network)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from kwf.operator.admission import MAX_LISTED, MAX_MESSAGE, MalformedReview, answer, respond

JSON = Any
WHEN_BOMB = "params.l.exists(a, params.l.exists(b, params.l.exists(c, c < 0)))"


def nested(depth: int) -> JSON:
    value: JSON = "bottom"
    for _ in range(depth):
        value = {"deeper": value}
    return value


def step(name: str, **fields: JSON) -> dict[str, JSON]:
    return {"name": name, "script": {"language": "python", "source": "print(1)"}, **fields}


def job(*steps: dict[str, JSON], **spec: JSON) -> dict[str, JSON]:
    return {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": "Job",
        "metadata": {"name": "run", "namespace": "team-a"},
        "spec": {"steps": list(steps) or [step("a")], **spec},
    }


def review(obj: JSON, *, operation: str = "CREATE", old: JSON = None, **request: JSON) -> dict[str, JSON]:
    kind = obj.get("kind", "Job") if isinstance(obj, dict) else "Job"
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "workflow.kwf.dev", "version": "v1alpha1", "kind": kind},
            "resource": {"group": "workflow.kwf.dev", "version": "v1alpha1", "resource": kind.lower() + "s"},
            "operation": operation,
            "object": obj,
            "oldObject": old,
            **request,
        },
    }


def response(obj: JSON, **kwargs: JSON) -> dict[str, JSON]:
    answered = respond(review(obj, **kwargs))
    assert answered["apiVersion"] == "admission.k8s.io/v1" and answered["kind"] == "AdmissionReview"
    assert answered["response"]["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002"
    result: dict[str, JSON] = answered["response"]
    return result


def refusal(obj: JSON, **kwargs: JSON) -> str:
    result = response(obj, **kwargs)
    assert result["allowed"] is False, result
    assert result["status"]["code"] == 422
    message: str = result["status"]["message"]
    return message


def test_a_valid_job_is_allowed() -> None:
    assert response(job(step("a"), step("b", dependsOn=["a"], when="state.go == true"))) == {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "allowed": True,
    }


def test_params_nested_too_deeply_are_refused_naming_the_field_and_depth() -> None:
    message = refusal(job(params={"tree": nested(250)}))
    assert message.startswith("spec.params: nested 251 deep, at most ")


def test_a_when_bomb_is_refused_naming_the_steps_when() -> None:
    message = refusal(job(step("ok"), step("bomb", when=WHEN_BOMB), params={"l": [1, 2]}))
    assert message.startswith("spec.steps[1].when: expression ")
    assert "over the limit" in message


def test_a_cycle_is_refused_naming_it() -> None:
    message = refusal(job(step("b", dependsOn=["c"]), step("c", dependsOn=["b"])))
    assert message == "spec.steps: cycle: b -> c -> b"


def test_a_workflow_with_a_bad_step_is_refused() -> None:
    workflow = job(step("a", dependsOn=["nobody"])) | {"kind": "Workflow"}
    message = refusal(workflow)
    assert message.startswith("spec.steps[0].dependsOn: ") and "nobody" in message


def test_template_in_script_source_is_refused_pointing_to_the_environment() -> None:
    message = refusal(
        job({"name": "a", "script": {"language": "python", "source": "print('{{ params.x }}')"}})
    )
    assert message.startswith("spec.steps[0].script.source: ")
    assert "$KWF_PARAMS" in message


def test_every_problem_is_listed_up_to_a_bound() -> None:
    many = [step(f"s{i}", dependsOn=[f"missing-{i}"]) for i in range(MAX_LISTED + 5)]
    message = refusal(job(*many))
    parts = message.split("; ")
    assert len(parts) == MAX_LISTED + 1
    assert parts[0].startswith("spec.steps[0].dependsOn: ")
    assert parts[-1] == "and 5 more"


def test_an_update_that_breaks_the_spec_is_refused() -> None:
    old = job(step("a"))
    new = job(step("a", when=WHEN_BOMB), params={"l": [1]})
    assert refusal(new, operation="UPDATE", old=old).startswith("spec.steps[0].when: ")


def test_an_update_leaving_the_spec_alone_is_allowed_even_if_the_spec_is_bad() -> None:
    """An object admitted before the webhook existed can still lose its
    finalizers and be deleted."""
    bad = job(step("b", dependsOn=["c"]), step("c", dependsOn=["b"]))
    unfinalized = copy.deepcopy(bad)
    bad["metadata"]["finalizers"] = ["workflow.kwf.dev/kopf"]
    assert response(unfinalized, operation="UPDATE", old=bad)["allowed"] is True
    # The same spec as a CREATE is refused: it is the unchanged spec that lets it through.
    assert response(unfinalized)["allowed"] is False


def test_status_writes_and_deletes_are_allowed_without_checks() -> None:
    bad = job(step("b", dependsOn=["c"]), step("c", dependsOn=["b"]))
    assert response(bad, operation="UPDATE", old=job(), subResource="status")["allowed"] is True
    assert response(None, operation="DELETE", old=bad)["allowed"] is True


def test_other_kinds_are_allowed_with_a_warning() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}
    result = response(pod, kind={"group": "", "version": "v1", "kind": "Pod"})
    assert result["allowed"] is True
    assert result["warnings"] == ["kwf validates only Jobs and Workflows of workflow.kwf.dev"]


def test_a_review_without_the_object_is_refused_saying_so() -> None:
    assert refusal(None) == "request.object: missing or not an object"


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ([], "expected a JSON object, got list"),
        ({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}, "expected apiVersion"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "request: missing"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}, "request.uid"),
    ],
)
def test_malformed_reviews_are_answered_with_a_clear_error(body: JSON, said: str) -> None:
    with pytest.raises(MalformedReview, match=said):
        respond(body)
    status, reply = answer(json.dumps(body).encode())
    assert status == 400
    assert reply["error"].startswith("not an AdmissionReview: ") and said in reply["error"]


def test_a_body_that_is_not_json_or_too_deep_to_parse_is_a_clear_error() -> None:
    assert answer(b"{not json")[0] == 400
    status, reply = answer(b"[" * 200_000 + b"]" * 200_000)
    assert status == 400 and reply["error"].startswith("the body is not JSON")


def test_answer_parses_and_decides() -> None:
    status, reply = answer(json.dumps(review(job(params={"tree": nested(250)}))).encode())
    assert status == 200
    assert reply["response"]["allowed"] is False
    assert reply["response"]["status"]["message"].startswith("spec.params: nested 251 deep")


def test_the_message_is_bounded() -> None:
    bombs = [step(f"s{i}", when=WHEN_BOMB) for i in range(MAX_LISTED)]
    message = refusal(job(*bombs, params={"l": [1]}))
    assert len(message) == MAX_MESSAGE and message.endswith("…")
    assert message.startswith("spec.steps[0].when: expression ")
