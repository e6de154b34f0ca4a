"""The child Job of a step attempt, built from real models."""

from __future__ import annotations

import json

import pytest

from kwf.api import Step
from kwf.engine.types import Inputs, Launch
from kwf.k8s.manifests import (
    LABEL_ATTEMPT,
    LABEL_JOB,
    LABEL_JOB_UID,
    LABEL_STEP,
    MANAGED_BY,
    Owner,
    PodOptions,
    child_job,
    child_name,
)
from kwf.steps.inputs import decode_inputs

OWNER = Owner(name="digest", namespace="team-a", uid="0b7c1e2a-5d6f-4a8b-9c0d-1e2f3a4b5c6d")
OPTIONS = PodOptions(runner_image="kwf.local/runner:test")


def launch(step: dict[str, object], number: int = 1, state: dict[str, object] | None = None) -> Launch:
    return Launch(
        step=Step.model_validate(step),
        number=number,
        inputs=Inputs(job=OWNER.name, namespace=OWNER.namespace, params={"repo": "x/y"}, state=state or {}),
        timeout_seconds=None,
    )


SCRIPT = {"name": "count", "script": {"source": "print(1)"}}


def test_short_names_are_kept_whole() -> None:
    assert child_name("digest", "count", 3) == "digest-count-3"


def test_long_names_are_cut_with_a_hash_and_stay_unique() -> None:
    job = "a" * 60
    names = {child_name(job, step, attempt) for step in ("fetch", "fetch2") for attempt in (1, 2, 10)}
    assert len(names) == 6
    for name in names:
        assert len(name) <= 63
        assert name.startswith("aaaa")
        assert not name.startswith("-")
    assert child_name(job, "fetch", 10).endswith("-10")
    assert child_name(job, "fetch", 1) == child_name(job, "fetch", 1)


def test_child_is_owned_and_labelled() -> None:
    job = child_job(launch(SCRIPT, 2), OWNER, OPTIONS)
    meta = job["metadata"]
    assert meta["name"] == "digest-count-2"
    assert meta["namespace"] == "team-a"
    (ref,) = meta["ownerReferences"]
    assert ref == {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": "Job",
        "name": "digest",
        "uid": OWNER.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    expected = {
        MANAGED_BY: "kwf",
        LABEL_JOB: "digest",
        LABEL_JOB_UID: OWNER.uid,
        LABEL_STEP: "count",
        LABEL_ATTEMPT: "2",
    }
    assert meta["labels"] == expected
    assert job["spec"]["template"]["metadata"]["labels"] == expected
    assert job["spec"]["backoffLimit"] == 0


def test_long_run_names_give_valid_label_values() -> None:
    owner = Owner(name="r" * 200, namespace="n", uid=OWNER.uid)
    labels = child_job(launch(SCRIPT), owner, OPTIONS)["metadata"]["labels"]
    assert len(labels[LABEL_JOB]) <= 63


def test_pod_is_isolated() -> None:
    pod = child_job(launch(SCRIPT), OWNER, OPTIONS)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    ctx = container["securityContext"]
    assert ctx["runAsUser"] == 65532
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["image"] == "kwf.local/runner:test"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["resources"]["limits"]["memory"]
    assert "serviceAccountName" not in pod  # the namespace's default, still without its token


def test_step_pods_run_as_the_named_service_account_without_its_token() -> None:
    options = PodOptions(
        runner_image="kwf.local/runner:test", image_pull_policy="Never", service_account="kwf-step"
    )
    container_step = {"name": "build", "container": {"image": "example/builder:1"}}
    for step in (SCRIPT, container_step):
        pod = child_job(launch(step), OWNER, options)["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "kwf-step"
        assert pod["automountServiceAccountToken"] is False
        for container in [*pod["containers"], *pod.get("initContainers", [])]:
            assert container["imagePullPolicy"] == "Never"


def test_step_resources_override_the_defaults() -> None:
    step = {**SCRIPT, "resources": {"limits": {"memory": "2Gi"}}}
    container = child_job(launch(step), OWNER, OPTIONS)["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["memory"] == "2Gi"
    assert container["resources"]["limits"]["cpu"] == "1"  # the default stays where not overridden


def test_step_timeout_becomes_the_jobs_deadline() -> None:
    step = launch(SCRIPT)
    timed = Launch(step=step.step, number=1, inputs=step.inputs, timeout_seconds=2.5)
    assert child_job(timed, OWNER, OPTIONS)["spec"]["activeDeadlineSeconds"] == 3
    assert "activeDeadlineSeconds" not in child_job(step, OWNER, OPTIONS)["spec"]


def test_secrets_travel_only_as_secret_key_refs() -> None:
    step = {
        "name": "ask",
        "llm": {"model": "m", "prompt": "hi", "apiKeySecretRef": {"name": "openai", "key": "api-key"}},
        "env": [
            {"name": "TOKEN", "secretKeyRef": {"name": "gh", "key": "token"}},
            {"name": "MODE", "value": "x"},
        ],
    }
    job = child_job(launch(step), OWNER, OPTIONS)
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KWF_LLM_API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "openai", "key": "api-key"}}
    assert env["TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "gh", "key": "token"}}
    assert env["MODE"]["value"] == "x"
    assert "valueFrom" not in json.dumps([e for e in env.values() if e["name"].startswith("KWF_INPUT")])


def test_inputs_are_chunked_and_decode_back() -> None:
    # Random-looking state does not compress: it must be cut into several variables.
    state = {f"k{i}": f"{i * 7919 % 100003:x}{i * 104729 % 999983:x}" * 8 for i in range(6000)}
    job = child_job(launch(SCRIPT, state=state), OWNER, OPTIONS)
    env = {
        e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"] if "value" in e
    }
    assert int(env["KWF_INPUTS"]) > 1
    assert max(len(v) for v in env.values()) < 100 * 1024
    decoded = decode_inputs(env)
    assert decoded.state == state
    assert decoded.params == {"repo": "x/y"}
    assert decoded.spec["name"] == "count"


def test_inputs_over_the_cap_are_refused_naming_sizes() -> None:
    state = {"blob": "".join(f"{i * 2654435761 % 4294967296:08x}" for i in range(300_000))}
    with pytest.raises(ValueError, match="bytes"):
        child_job(launch(SCRIPT, state=state), OWNER, OPTIONS)


def test_container_step_runs_the_users_image_after_an_init_container() -> None:
    step = {
        "name": "build",
        "container": {"image": "example/builder:1", "command": ["make"], "args": ["all"]},
    }
    pod = child_job(launch(step), OWNER, OPTIONS)["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["image"] == "kwf.local/runner:test"
    assert init["command"][-1] == "prepare"
    (main,) = pod["containers"]
    assert main["image"] == "example/builder:1"
    assert main["command"] == ["make"] and main["args"] == ["all"]
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert env["KWF_PARAMS"] == "/kwf/params.json"
    assert "KWF_INPUTS" not in env  # the user's program reads files, not our encoding


def test_the_same_launch_gives_the_same_manifest() -> None:
    assert child_job(launch(SCRIPT), OWNER, OPTIONS) == child_job(launch(SCRIPT), OWNER, OPTIONS)
