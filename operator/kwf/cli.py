"""``kwf``: run workflow files locally, check them, and (with the cluster
commands registered at the end) drive runs on a cluster."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

import kwf
from kwf.api import JobPhase, JobStatus
from kwf.clusterctl import register as register_cluster_commands
from kwf.local.executor import utcnow
from kwf.local.lint import lint_paths
from kwf.local.progress import LineProgress, LiveProgress, status_json
from kwf.local.run import run_local
from kwf.local.source import SourceError
from kwf.operator.command import register as register_operator_command

app = typer.Typer(
    name="kwf",
    help="Workflows on Kubernetes: a DAG of steps, one pod per step, shared state in status.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Output(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


def parse_assignments(items: list[str], option: str) -> dict[str, Any]:
    """``key=value`` pairs; a value is JSON when it parses as JSON, else a string."""
    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected key=value, got {item!r}", param_hint=option)
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw
    return values


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="a Job or Workflow YAML file")],
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="key=value over the file's params")
    ] = None,
    state: Annotated[
        list[str] | None, typer.Option("--state", help="key=value over the initial shared state")
    ] = None,
    output: Annotated[
        Output, typer.Option("--output", "-o", help="json: print the final status on stdout")
    ] = Output.TEXT,
    allow_container_local: Annotated[
        bool, typer.Option(help="run container steps of any image as local processes")
    ] = False,
) -> None:
    """Run a workflow file on this machine, no cluster needed. Exit 0 only if it succeeds."""
    params = parse_assignments(param or [], "--param")
    overrides = parse_assignments(state or [], "--state")
    # Progress goes to stderr when stdout carries the JSON answer.
    stream = sys.stderr if output is Output.JSON else sys.stdout
    progress: LineProgress | LiveProgress = (
        LiveProgress(Console(file=stream), utcnow) if stream.isatty() else LineProgress(stream)
    )
    try:
        status = asyncio.run(_run(file, params, overrides, progress, allow_container_local))
    except SourceError as exc:
        progress.close()
        typer.echo(f"kwf run: {exc}", err=True)
        raise typer.Exit(2) from None
    progress.close()
    if output is Output.JSON:
        typer.echo(json.dumps(status_json(status), indent=2))
    raise typer.Exit(0 if status.phase is JobPhase.SUCCEEDED else 1)


async def _run(
    file: Path,
    params: dict[str, Any],
    overrides: dict[str, Any],
    progress: LineProgress | LiveProgress,
    allow_container_local: bool,
) -> JobStatus:
    # The first Ctrl-C cancels the run the way spec.cancel does (running steps
    # are stopped, the status is still shown); a second one interrupts at once.
    cancel = asyncio.Event()
    loop = asyncio.get_running_loop()

    def interrupted() -> None:
        if cancel.is_set():
            loop.remove_signal_handler(signal.SIGINT)
            raise KeyboardInterrupt
        cancel.set()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, interrupted)
    return await run_local(
        file,
        params,
        overrides,
        on_update=progress,
        cancel=cancel,
        allow_container_local=allow_container_local,
    )


@app.command()
def lint(
    files: Annotated[list[Path], typer.Argument(help="YAML files or directories of them")],
) -> None:
    """Check workflow files offline: schema, graph, and YAML 1.1 traps. Exit 1 on any problem."""
    problems = lint_paths(files)
    for problem in problems:
        typer.echo(str(problem))
    if problems:
        typer.echo(f"{len(problems)} problem(s)", err=True)
        raise typer.Exit(1)


@app.command()
def version() -> None:
    """Print kwf's version."""
    typer.echo(kwf.__version__)


# --- cluster commands -------------------------------------------------------
# Each module adds its own commands to `app` here, one line apiece, e.g.
#     app.add_typer(operator_app, name="operator")   or   clusterctl.register(app)
register_operator_command(app)
register_cluster_commands(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
