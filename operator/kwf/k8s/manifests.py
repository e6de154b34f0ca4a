"""Pure builders of what kwf creates in a cluster: one batch/v1 Job per step attempt.

Nothing here does I/O. The names are deterministic, so a second launch of the
same attempt (after an operator restart) meets AlreadyExists instead of
starting the step twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping
from typing import Any

from kwf.api import GROUP, VERSION, Step
from kwf.engine.types import Launch
from kwf.steps.contract import (
    ENV_ATTEMPT,
    ENV_JOB,
    ENV_LLM_API_KEY,
    ENV_NAMESPACE,
    ENV_PARAMS,
    ENV_RESULT,
    ENV_SPEC,
    ENV_STATE,
    ENV_STEP,
)
from kwf.steps.inputs import encode_inputs

JSON = Any

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "kwf"
LABEL_JOB = f"{GROUP}/job"
LABEL_JOB_UID = f"{GROUP}/job-uid"
LABEL_STEP = f"{GROUP}/step"
LABEL_ATTEMPT = f"{GROUP}/attempt"
SELECTOR = f"{MANAGED_BY}={MANAGER}"

CONTAINER = "step"
PREPARE = "prepare"
WORKDIR = "/kwf"
ENV_WORKDIR = "KWF_WORKDIR"
MAX_NAME = 63
RUN_AS = 65532
TERMINATION_MESSAGE = "/dev/termination-log"
DEFAULT_RUNNER_IMAGE = "kwf.local/runner:dev"
DEFAULT_RESOURCES: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}


@dataclasses.dataclass(frozen=True)
class Owner:
    """The kwf Job (the run) that owns a child."""

    name: str
    namespace: str
    uid: str


@dataclasses.dataclass(frozen=True)
class PodOptions:
    runner_image: str = DEFAULT_RUNNER_IMAGE
    image_pull_policy: str = "IfNotPresent"
    resources: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=lambda: DEFAULT_RESOURCES)
    #: seconds a finished child Job is kept (the run's record keeps its outcome)
    child_ttl_seconds: int | None = None
    #: the ServiceAccount step pods run as (its token is never mounted); None: the namespace's default
    service_account: str | None = None


def short_hash(text: str, length: int = 6) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def child_name(job: str, step: str, attempt: int) -> str:
    """``<job>-<step>-<attempt>``; when longer than 63, the front is cut and a
    hash of the whole name keeps it unique (the attempt stays readable)."""
    full = f"{job}-{step}-{attempt}"
    if len(full) <= MAX_NAME:
        return full
    tail = f"-{short_hash(full)}-{attempt}"
    return f"{full[: MAX_NAME - len(tail)].rstrip('-.')}{tail}"


def label_value(text: str) -> str:
    """A label value (at most 63 characters) that still tells names apart."""
    if len(text) <= MAX_NAME:
        return text
    tail = f"-{short_hash(text)}"
    return f"{text[: MAX_NAME - len(tail)].rstrip('-._')}{tail}"


def child_labels(owner: Owner, step: str, attempt: int) -> dict[str, str]:
    return {
        MANAGED_BY: MANAGER,
        LABEL_JOB: label_value(owner.name),
        LABEL_JOB_UID: owner.uid,
        LABEL_STEP: step,
        LABEL_ATTEMPT: str(attempt),
    }


def owner_reference(owner: Owner) -> dict[str, JSON]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Job",
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def step_image(step: Step, options: PodOptions) -> str:
    if step.container is not None:
        return step.container.image
    if step.script is not None and step.script.image:
        return step.script.image
    return options.runner_image


def secret_env(step: Step) -> list[dict[str, JSON]]:
    """Secrets as secretKeyRef variables: the kubelet fills them in, their
    values never pass through kwf."""
    env: list[dict[str, JSON]] = []
    if step.llm is not None and step.llm.api_key_secret_ref is not None:
        ref = step.llm.api_key_secret_ref
        env.append(
            {"name": ENV_LLM_API_KEY, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
        )
    for var in step.env or ():
        if var.secret_key_ref is not None:
            ref = var.secret_key_ref
            env.append({"name": var.name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
        elif var.value is not None:
            env.append({"name": var.name, "value": var.value})
    return env


def resources(step: Step, options: PodOptions) -> dict[str, JSON]:
    merged = {kind: dict(values) for kind, values in options.resources.items()}
    if step.resources is not None:
        for kind, values in (("requests", step.resources.requests), ("limits", step.resources.limits)):
            if values:
                merged.setdefault(kind, {}).update(values)
    return merged


def _security_context() -> dict[str, JSON]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def input_env(launch: Launch) -> list[dict[str, str]]:
    """The rendered spec, params and state, encoded into chunked variables
    (never one value near the 128 KiB a single variable may hold)."""
    encoded = encode_inputs(launch.step, launch.inputs.params, launch.inputs.state)
    return [{"name": name, "value": value} for name, value in encoded.items()]


def _container(name: str, image: str, options: PodOptions, env: list[dict[str, JSON]]) -> dict[str, JSON]:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": options.image_pull_policy,
        "env": env,
        "securityContext": _security_context(),
        "terminationMessagePath": TERMINATION_MESSAGE,
        "terminationMessagePolicy": "File",
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "kwf", "mountPath": WORKDIR}],
    }


def child_job(launch: Launch, owner: Owner, options: PodOptions) -> dict[str, JSON]:
    """The batch/v1 Job of one step attempt.

    Steps the runner image runs (script, http, llm) are one container running
    ``python3 -m kwf.steps``. A step in a user's image (container, or script
    with ``image``) gets an init container of the runner image that writes its
    input files into ``/kwf``; the user's program reads them from there and
    writes its result to ``$KWF_RESULT`` (the termination message) itself.
    """
    step, attempt = launch.step, launch.number
    name = child_name(owner.name, step.name, attempt)
    labels = child_labels(owner, step.name, attempt)
    identity: list[dict[str, JSON]] = [
        {"name": ENV_JOB, "value": owner.name},
        {"name": ENV_NAMESPACE, "value": owner.namespace},
        {"name": ENV_STEP, "value": step.name},
        {"name": ENV_ATTEMPT, "value": str(attempt)},
        {"name": ENV_RESULT, "value": TERMINATION_MESSAGE},
        {"name": ENV_WORKDIR, "value": WORKDIR},
        {"name": "HOME", "value": "/tmp"},
        {"name": "TMPDIR", "value": "/tmp"},
    ]
    image = step_image(step, options)
    init: list[dict[str, JSON]] = []
    if image == options.runner_image and step.container is None:
        main = _container(CONTAINER, image, options, [*identity, *input_env(launch), *secret_env(step)])
        main["command"] = ["python3", "-m", "kwf.steps"]
    else:
        prepare = _container(PREPARE, options.runner_image, options, [*identity, *input_env(launch)])
        prepare["command"] = ["python3", "-m", "kwf.steps", "prepare"]
        prepare["resources"] = dict(DEFAULT_RESOURCES)
        init.append(prepare)
        files = [
            {"name": ENV_SPEC, "value": f"{WORKDIR}/spec.json"},
            {"name": ENV_PARAMS, "value": f"{WORKDIR}/params.json"},
            {"name": ENV_STATE, "value": f"{WORKDIR}/state.json"},
        ]
        main = _container(CONTAINER, image, options, [*identity, *files, *secret_env(step)])
        if step.container is not None:
            if step.container.command:
                main["command"] = list(step.container.command)
            if step.container.args:
                main["args"] = list(step.container.args)
        elif step.script is not None:
            main["workingDir"] = WORKDIR
            if step.script.language == "python":
                main["command"] = ["python3", "-I", f"{WORKDIR}/step.py"]
            else:
                main["command"] = ["/bin/sh", "-eu", f"{WORKDIR}/step.sh"]
    main["resources"] = resources(step, options)
    pod_spec: dict[str, JSON] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [main],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
            {"name": "kwf", "emptyDir": {"sizeLimit": "64Mi"}},
        ],
    }
    if init:
        pod_spec["initContainers"] = init
    if options.service_account:
        pod_spec["serviceAccountName"] = options.service_account
    spec: dict[str, JSON] = {
        "backoffLimit": 0,
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if launch.timeout_seconds:
        spec["activeDeadlineSeconds"] = max(1, math.ceil(launch.timeout_seconds))
    if options.child_ttl_seconds is not None:
        spec["ttlSecondsAfterFinished"] = options.child_ttl_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": spec,
    }


def _holds(existing: JSON, wanted: JSON) -> bool:
    """Whether ``existing`` holds all of ``wanted`` (the API server adds defaults)."""
    if isinstance(wanted, Mapping):
        return isinstance(existing, Mapping) and all(
            key in existing and _holds(existing[key], value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(existing, list)
            and len(existing) == len(wanted)
            and all(_holds(e, w) for e, w in zip(existing, wanted, strict=True))
        )
    return bool(existing == wanted)


def is_launch(existing: Mapping[str, JSON], manifest: Mapping[str, JSON]) -> bool:
    """Whether a child Job found under an attempt's name is that very launch: its
    labels, owner and pod template are what kwf would create for it now. One
    that is not (another's Job under a name kwf was about to use) is never adopted."""
    meta, wanted = existing.get("metadata") or {}, manifest["metadata"]
    return (
        meta.get("namespace") == wanted["namespace"]
        and _holds(meta.get("labels") or {}, wanted["labels"])
        and _holds(meta.get("ownerReferences") or [], wanted["ownerReferences"])
        and _holds(existing.get("spec") or {}, manifest["spec"])
    )
