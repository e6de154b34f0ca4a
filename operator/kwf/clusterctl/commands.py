"""The cluster commands of ``kwf``: submit, get, watch, logs, cancel, suspend,
resume, retry, and ``state get|set``. Each is a thin shell over the API calls
in this package; errors and exit codes are :mod:`kwf.clusterctl.connect`'s."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from kwf.clusterctl.connect import (
    EXIT_BAD_INPUT,
    EXIT_CLUSTER,
    EXIT_FINISHED_UNSUCCESSFUL,
    EXIT_NOT_FOUND,
    CliError,
    Context,
    Format,
    Kubeconfig,
    Namespace,
    Output,
    Target,
    clean,
    echo_data,
    parse_assignments,
    patch_run,
    read_run,
    render,
    reported,
    run,
)
from kwf.clusterctl.render import describe, graph, job_status
from kwf.clusterctl.shared_state import lookup, patch_from_assignments, shared_state, update_shared_state
from kwf.clusterctl.submit import plan_submission, submit
from kwf.k8s.api import KWF_JOBS, PODS, ApiError, Client
from kwf.k8s.manifests import CONTAINER, LABEL_ATTEMPT, LABEL_JOB, LABEL_JOB_UID, LABEL_STEP, label_value
from kwf.local.progress import LineProgress, LiveProgress

JSON = Any
RunName = Annotated[str, typer.Argument(help="the run (a workflow.kwf.dev Job)", show_default=False)]


def utcnow() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------ submit


def submit_command(
    file: Annotated[Path, typer.Argument(help="a YAML file of Jobs and/or Workflows")],
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="key=value over params")] = None,
    start_run: Annotated[bool, typer.Option("--run", help="also start a run of the file's Workflow")] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="follow the run until it finishes")] = False,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
    output: Output = Format.TEXT,
) -> None:
    """Create the runs (and Workflows) in FILE on the cluster."""
    target = Target(kubeconfig, context, namespace)
    with reported("submit"):
        params = parse_assignments(param or [], "--param")

    async def work(api: Client, ns: str) -> int:
        plan = plan_submission(
            file, params, start_run=start_run, namespace=ns, explicit=namespace is not None
        )
        if watch and len(plan.jobs) != 1:
            raise CliError(f"--watch follows one run; {file} starts {len(plan.jobs)}", EXIT_BAD_INPUT)
        done = await submit(api, plan)
        if output is not Format.TEXT:
            objects = [clean(obj) for _, obj in done]
            echo_data(objects[0] if len(objects) == 1 else _list(objects), output)
        else:
            for what, obj in done:
                kind = "workflow" if obj.get("kind") == "Workflow" else "job"
                typer.echo(f"{kind}.workflow.kwf.dev/{obj['metadata']['name']} {what}")
        if not watch:
            return 0
        created = done[-1][1]["metadata"]
        return await _follow(api, created["namespace"], created["name"], Format.TEXT)

    raise typer.Exit(run("submit", target, work))


def _list(items: list[dict[str, JSON]]) -> dict[str, JSON]:
    return {"apiVersion": "v1", "kind": "List", "items": items}


# ------------------------------------------------------------ get / watch


def get_command(
    name: RunName,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
    output: Output = Format.TEXT,
) -> None:
    """Show a run: its steps as a tree with phase and duration, and its shared state."""

    async def work(api: Client, ns: str) -> None:
        obj = await read_run(api, ns, name)
        if output is Format.TEXT:
            Console(highlight=False, soft_wrap=True).print(describe(obj, utcnow()))
        else:
            echo_data(clean(obj), output)

    run("get", Target(kubeconfig, context, namespace), work)


def watch_command(
    name: RunName,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
    output: Output = Format.TEXT,
) -> None:
    """Follow a run until it finishes. Exit 0 only if it succeeds."""

    async def work(api: Client, ns: str) -> int:
        return await _follow(api, ns, name, output)

    raise typer.Exit(run("watch", Target(kubeconfig, context, namespace), work))


async def _follow(api: Client, namespace: str, name: str, output: Format) -> int:
    """Show each change of the run (a live table on a terminal, lines otherwise)."""
    stream = sys.stderr if output is not Format.TEXT else sys.stdout
    progress: LineProgress | LiveProgress = (
        LiveProgress(Console(file=stream), utcnow) if stream.isatty() else LineProgress(stream)
    )
    last: dict[str, JSON] | None = None
    try:
        async for event in api.list_and_watch(KWF_JOBS, namespace, field_selector=f"metadata.name={name}"):
            if event.type == "SYNCED":
                if not event.object["items"] and last is None:
                    raise CliError(f"run {name!r} not found in namespace {namespace!r}", EXIT_NOT_FOUND)
                continue
            if event.type == "DELETED":
                raise CliError(f"run {name!r} in namespace {namespace!r} was deleted", EXIT_CLUSTER)
            last = event.object
            status = job_status(last)
            progress(status)
            if status.phase.finished:
                break
    finally:
        progress.close()
    assert last is not None
    if output is not Format.TEXT:
        echo_data(clean(last), output)
    return 0 if job_status(last).phase.value == "Succeeded" else EXIT_FINISHED_UNSUCCESSFUL


# -------------------------------------------------------------------- logs


def logs_command(
    name: RunName,
    step: Annotated[str | None, typer.Argument(help="only this step")] = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
) -> None:
    """Print the logs of a run's step pods, every attempt, in step order."""

    async def work(api: Client, ns: str) -> None:
        obj = await read_run(api, ns, name)
        selector = f"{LABEL_JOB}={label_value(name)},{LABEL_JOB_UID}={obj['metadata']['uid']}"
        if step:
            selector += f",{LABEL_STEP}={step}"
        pods = (await api.list(PODS, ns, label_selector=selector)).get("items") or []
        if not pods:
            which = f"step {step!r} of run" if step else "run"
            raise CliError(
                f"no pods of {which} {name!r} in namespace {ns!r} (not started yet, or cleaned up)",
                EXIT_NOT_FOUND,
            )
        pods.sort(key=_pod_order)
        for pod in pods:
            labels = pod["metadata"].get("labels") or {}
            if len(pods) > 1:
                typer.echo(
                    f"==> step {labels.get(LABEL_STEP)}, attempt {labels.get(LABEL_ATTEMPT)}"
                    f" (pod {pod['metadata']['name']}) <=="
                )
            try:
                text = await api.logs(ns, pod["metadata"]["name"], CONTAINER)
            except ApiError as exc:  # e.g. the container has not started yet
                typer.echo(f"(no log: {exc.message})")
                continue
            if not text:
                typer.echo("(no log yet)")
                continue
            typer.echo(text, nl=not text.endswith("\n"))

    run("logs", Target(kubeconfig, context, namespace), work)


def _pod_order(pod: Mapping[str, JSON]) -> tuple[str, int, str]:
    labels = pod["metadata"].get("labels") or {}
    attempt = str(labels.get(LABEL_ATTEMPT) or "0")
    return (
        str(labels.get(LABEL_STEP) or ""),
        int(attempt) if attempt.isdigit() else 0,
        pod["metadata"]["name"],
    )


# ---------------------------------------------------------------- controls


def _control(command: str, patch: dict[str, JSON], done: str) -> Callable[..., None]:
    def control(
        name: RunName,
        kubeconfig: Kubeconfig = None,
        context: Context = None,
        namespace: Namespace = None,
        output: Output = Format.TEXT,
    ) -> None:
        async def work(api: Client, ns: str) -> None:
            obj = await read_run(api, ns, name)
            phase = job_status(obj).phase
            if phase.finished:
                raise CliError(f"run {name!r} already finished ({phase.value}); nothing to {command}", 0)
            updated = await patch_run(api, ns, name, {"spec": patch})
            if output is Format.TEXT:
                typer.echo(f"run {name}: {done}")
            else:
                echo_data(clean(updated), output)

        run(command, Target(kubeconfig, context, namespace), work)

    control.__doc__ = {
        "cancel": "Stop the run's running steps and finish it as Cancelled (spec.cancel).",
        "suspend": "Start no new steps until resumed; running steps go on (spec.suspend).",
        "resume": "Let a suspended run start steps again (spec.suspend: false).",
    }[command]
    return control


def retry_command(
    name: RunName,
    step: Annotated[str | None, typer.Option("--step", "-s", help="this step and all after it")] = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
    output: Output = Format.TEXT,
) -> None:
    """Run failed steps again (every failed step, or --step and all after it)."""

    async def work(api: Client, ns: str) -> None:
        obj = await read_run(api, ns, name)
        if step is not None:
            known = [n for n, _ in graph(obj)] or [s.name for s in job_status(obj).steps]
            if step not in known:
                raise CliError(
                    f"--step: run {name!r} has no step {step!r} (steps: {', '.join(known) or 'none yet'})",
                    EXIT_BAD_INPUT,
                )
        # A new id is a new request: the operator carries out each id once.
        # step None is sent as null: a merge patch must remove an earlier step.
        request = {"id": f"{utcnow():%Y%m%d%H%M%S}-{secrets.token_hex(3)}", "step": step}
        updated = await patch_run(api, ns, name, {"spec": {"rerun": request}})
        if output is Format.TEXT:
            what = f"step {step} and all after it" if step else "failed steps"
            typer.echo(f"run {name}: rerun of {what} requested (id {request['id']})")
        else:
            echo_data(clean(updated), output)

    run("retry", Target(kubeconfig, context, namespace), work)


# -------------------------------------------------------------------- state

state_app = typer.Typer(help="Read and write a run's shared state.", no_args_is_help=True)


@state_app.command("get")
def state_get(
    name: RunName,
    key: Annotated[str | None, typer.Argument(help="a dotted key, e.g. report.title")] = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
    output: Output = Format.TEXT,
) -> None:
    """Print the shared state, or the value at KEY (text prints a string as is)."""

    async def work(api: Client, ns: str) -> None:
        state = shared_state(await read_run(api, ns, name))
        value = state if key is None else lookup(state, key)
        if output is Format.TEXT and isinstance(value, str):
            typer.echo(value)
        else:
            typer.echo(render(value, Format.YAML if output is Format.YAML else Format.JSON))

    run("state get", Target(kubeconfig, context, namespace), work)


@state_app.command("set")
def state_set(
    name: RunName,
    assignments: Annotated[list[str], typer.Argument(help="key=value (JSON or text); key=null removes")],
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = None,
    output: Output = Format.TEXT,
) -> None:
    """Merge keys into the shared state; concurrent writes to other keys are kept."""
    with reported("state set"):
        patch = patch_from_assignments(parse_assignments(assignments, ""))

    async def work(api: Client, ns: str) -> None:
        written = await update_shared_state(api, ns, name, patch)
        if output is Format.TEXT:
            raced = f" after {written.attempts} attempts" if written.attempts > 1 else ""
            typer.echo(f"run {name}: shared state updated ({', '.join(patch)}){raced}")
        else:
            echo_data(written.state, output)

    run("state set", Target(kubeconfig, context, namespace), work)


def register(app: typer.Typer) -> None:
    """Add the cluster commands to ``app``."""
    app.command("submit")(submit_command)
    app.command("get")(get_command)
    app.command("watch")(watch_command)
    app.command("logs")(logs_command)
    for command, patch, done in (
        ("cancel", {"cancel": True}, "cancel requested"),
        ("suspend", {"suspend": True}, "suspended: no new steps start"),
        ("resume", {"suspend": False}, "resumed"),
    ):
        app.command(command)(_control(command, patch, done))
    app.command("retry")(retry_command)
    app.add_typer(state_app, name="state")
