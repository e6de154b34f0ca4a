"""plan(): order, fan-out, parallelism, when, status shape."""

from __future__ import annotations

from kwf.engine.types import AttemptPhase, Launch
from tests.unit.engine.plan_builders import T0, Run, job, step


def test_steps_start_in_dependency_order_with_fan_out() -> None:
    run = Run(job(step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c")))
    run.plan()
    assert run.launches() == ["a"]
    assert run.status.phase == "Running" and run.status.progress == "0/4"
    run.finish("a")
    run.plan()
    assert run.launches() == ["b", "c"]
    run.finish("b")
    run.plan()
    assert run.launches() == []
    run.finish("c")
    run.plan()
    assert run.launches() == ["d"]
    run.finish("d")
    run.plan()
    assert run.status.phase == "Succeeded"
    assert run.status.progress == "4/4"
    assert run.status.finished_at == T0 and run.status.started_at == T0
    assert run.condition("Ready") == ("True", "Succeeded")
    assert run.condition("Reconciling") == ("False", "Succeeded")
    assert run.status.observed_generation == 1


def test_parallelism_caps_the_steps_running_at_once() -> None:
    run = Run(job(*(step(f"s{i}") for i in range(5)), parallelism=2))
    run.plan()
    assert run.launches() == ["s0", "s1"]
    run.finish("s1")
    run.plan()
    assert run.launches() == ["s2"]
    assert len(run.running()) == 2


def test_a_false_when_skips_the_step_and_its_dependents_still_run() -> None:
    run = Run(job(step("a", when="params.go"), step("b", "a"), params={"go": False}))
    run.plan()
    assert run.phases() == {"a": "Skipped", "b": "Running"}
    assert run.step("a").message == "when is false: params.go"


def test_when_is_evaluated_when_the_step_becomes_ready() -> None:
    run = Run(
        job(
            step("a"),
            step("b", "a", when="state.n > 1 && steps.a.phase == 'Succeeded'"),
            initialState={"n": 0},
        )
    )
    run.plan()
    run.finish("a", state={"n": 2})
    run.plan()
    assert run.launches() == ["b"]


def test_a_when_that_fails_to_evaluate_fails_the_step_and_run() -> None:
    run = Run(job(step("a", when="state.missing")))
    run.plan()
    assert run.step("a").phase == "Failed"
    assert run.step("a").message == "step a: when 'state.missing': no key 'missing'"
    assert run.status.phase == "Failed"
    assert run.status.message == "step a failed: step a: when 'state.missing': no key 'missing'"
    assert run.condition("Stalled") == ("True", "Failed")


def test_templates_are_rendered_at_launch_with_params_and_state_in_the_inputs() -> None:
    run = Run(
        job(
            step("a"),
            step(
                "b",
                "a",
                script=None,
                container={"image": "i", "args": ["{{ params.x }}", "{{ state.y }} {{ steps.a.output.v }}"]},
            ),
            params={"x": 1},
        )
    )
    run.plan()
    run.finish("a", output={"v": "out"}, state={"y": "why"})
    (launch,) = run.plan().actions
    assert isinstance(launch, Launch)
    assert launch.step.container is not None and launch.step.container.args == ["1", "why out"]
    assert launch.inputs.params == {"x": 1} and launch.inputs.state == {"y": "why"}
    assert launch.number == 1


def test_a_missing_template_key_fails_the_step_without_a_launch() -> None:
    run = Run(job(step("a", env=[{"name": "X", "value": "{{ params.nope }}"}])))
    result = run.plan()
    assert result.actions == ()
    assert run.step("a").phase == "Failed"
    assert "no key 'nope' in params" in (run.step("a").message or "")


def test_plan_is_idempotent() -> None:
    run = Run(job(step("a"), step("b"), step("c", "a")))
    run.plan()
    again = run.plan()
    assert again.actions == ()
    assert again.status == run.status


def test_condition_transition_time_moves_only_when_status_changes() -> None:
    run = Run(job(step("a"), step("b", "a")))
    run.plan()
    before = {c.type: c.last_transition_time for c in run.status.conditions}
    run.finish("a")
    run.tick(5)
    run.plan()
    assert {c.type: c.last_transition_time for c in run.status.conditions} == before
    run.finish("b")
    run.tick(5)
    run.plan()
    times = {c.type: c.last_transition_time for c in run.status.conditions}
    assert times["Ready"] == run.now and times["Reconciling"] == run.now
    assert times["Stalled"] == before["Stalled"]


def test_usage_is_summed_by_model() -> None:
    from kwf.engine.types import Usage

    run = Run(job(step("a"), step("b")))
    run.plan()
    run.finish("a", usage={"m": Usage(1, 2, 3)})
    run.finish("b", usage={"m": Usage(10, 20, 30), "n": Usage(0, 1, 1)})
    run.plan()
    assert run.status.dump()["usage"] == {
        "m": {"promptTokens": 11, "completionTokens": 22, "totalTokens": 33},
        "n": {"promptTokens": 0, "completionTokens": 1, "totalTokens": 1},
    }


def test_output_preview_and_bounded_outputs() -> None:
    from kwf.engine.types import Limits

    run = Run(job(step("a"), step("b")), limits=Limits(output_bytes=100, output_preview=10))
    run.plan()
    run.finish("a", output="x" * 500)
    run.finish("b", output={"k": 1})
    run.plan()
    assert run.step("a").output == "xxxxxxxxx…"
    assert run.status.outputs["b"] == {"k": 1}
    assert "$truncated" in run.status.outputs["a"]
    assert run.step("a").message == "output of 502 bytes kept as a preview (limit 100 bytes)"


def test_failed_attempt_phase_is_what_counts() -> None:
    run = Run(job(step("a")))
    run.plan()
    run.finish("a", AttemptPhase.FAILED, message="exit 1")
    run.plan()
    assert run.status.phase == "Failed"
    assert run.status.message == "step a failed: exit 1"
