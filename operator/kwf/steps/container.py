"""Container steps outside a cluster.

In a cluster a container step's pod runs the user's image with its own
command: that container writes ``$KWF_RESULT`` itself (the termination
message path, so at most 4 KiB) and reads ``$KWF_PARAMS``/``$KWF_STATE`` from
files an init container of the runner image wrote (``python -m kwf.steps
prepare``). Nothing here runs in that pod.

On this machine there is no image to run. The command runs directly only
when the image is the runner image (``$KWF_RUNNER_IMAGE``), whose programs
are the ones installed here, or when the user allows it explicitly
(``kwf run --allow-container-local``); otherwise the step fails saying so.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from kwf.api import Step
from kwf.engine.types import Inputs, Limits, Result
from kwf.steps.contract import DEFAULT_LIMITS, StepError
from kwf.steps.process import run_under_contract

ENV_RUNNER_IMAGE = "KWF_RUNNER_IMAGE"


def runs_here(image: str, *, runner_image: str | None, allow_local: bool) -> bool:
    return allow_local or (runner_image is not None and image == runner_image)


async def run_container(
    step: Step,
    inputs: Inputs,
    attempt: int,
    *,
    env: Mapping[str, str] | None = None,
    time_limit: float | None = None,
    limits: Limits = DEFAULT_LIMITS,
    allow_local: bool = False,
    runner_image: str | None = None,
    echo: bool = False,
) -> Result:
    container = step.container
    assert container is not None
    runner_image = runner_image or os.environ.get(ENV_RUNNER_IMAGE)
    if not runs_here(container.image, runner_image=runner_image, allow_local=allow_local):
        raise StepError(
            f"container step {step.name!r} needs a cluster to run image {container.image!r}; "
            "run it on a cluster, or pass --allow-container-local to run its command on this machine"
        )
    argv = [*(container.command or []), *(container.args or [])]
    if not argv:
        raise StepError(
            f"container step {step.name!r} has no command: outside a cluster the image's "
            "entrypoint is unknown, so set container.command"
        )
    return await run_under_contract(
        argv, step, inputs, attempt, extra_env=env, time_limit=time_limit, limits=limits, echo=echo
    )
