"""``kwf operator``: run the operator in the foreground."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Annotated

import typer

DEFAULT_RUNNER_IMAGE = "kwf.local/runner:dev"


def operator(
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="watch this namespace (repeatable); default: all"),
    ] = None,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="watch every namespace (the default)")
    ] = False,
    kubeconfig: Annotated[
        str | None, typer.Option("--kubeconfig", help="default: $KUBECONFIG, in-cluster, ~/.kube/config")
    ] = None,
    runner_image: Annotated[
        str | None,
        typer.Option(
            "--runner-image",
            help=f"image of script/http/llm steps (env KWF_RUNNER_IMAGE; default {DEFAULT_RUNNER_IMAGE})",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="serve Prometheus /metrics on this port")
    ] = None,
    liveness_port: Annotated[
        int | None, typer.Option("--liveness-port", help="serve /healthz on this port")
    ] = None,
    inline: Annotated[
        bool, typer.Option("--inline", help="run steps with executor: inline in the operator")
    ] = False,
    inline_concurrency: Annotated[
        int, typer.Option("--inline-concurrency", min=1, help="inline step attempts running at once")
    ] = 32,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
) -> None:
    """Run the kwf operator in the foreground until SIGINT/SIGTERM."""
    # Imported here: kopf and the API client take seconds to import, which
    # every other `kwf` command would pay otherwise.
    from kwf.operator.main import Options, run

    if all_namespaces and namespace:
        raise typer.BadParameter("use either --namespace or --all-namespaces", param_hint="--namespace")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx2", "httpcore2", "kopf"):
        logging.getLogger(noisy).setLevel(logging.INFO if noisy == "kopf" else logging.WARNING)
    options = Options(
        namespaces=tuple(namespace or ()),
        kubeconfig=kubeconfig,
        runner_image=runner_image or os.environ.get("KWF_RUNNER_IMAGE") or DEFAULT_RUNNER_IMAGE,
        metrics_port=metrics_port,
        liveness_port=liveness_port,
        inline=inline,
        inline_concurrency=inline_concurrency,
    )
    asyncio.run(run(options))


def register(app: typer.Typer) -> None:
    app.command("operator")(operator)
