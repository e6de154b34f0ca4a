"""``kwf operator``: run the operator in the foreground."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from typing import Annotated, Literal

import typer

DEFAULT_RUNNER_IMAGE = "kwf.local/runner:dev"
PullPolicy = Literal["Always", "IfNotPresent", "Never"]


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
    runner_pull_policy: Annotated[
        PullPolicy,
        typer.Option(
            "--runner-pull-policy", envvar="KWF_RUNNER_PULL_POLICY", help="imagePullPolicy of step containers"
        ),
    ] = "IfNotPresent",
    step_service_account: Annotated[
        str | None,
        typer.Option(
            "--step-service-account",
            envvar="KWF_STEP_SERVICE_ACCOUNT",
            help="ServiceAccount of step pods (its token is never mounted); default: the namespace's",
        ),
    ] = None,
    leader_election: Annotated[
        bool,
        typer.Option(
            "--leader-election",
            envvar="KWF_LEADER_ELECTION",
            help="wait for a Lease before doing anything; for more than one replica",
        ),
    ] = False,
    leader_election_namespace: Annotated[
        str | None,
        typer.Option(
            "--leader-election-namespace",
            envvar="POD_NAMESPACE",
            help="namespace of the Lease; default: the kubeconfig's (in a pod: its own)",
        ),
    ] = None,
    leader_election_name: Annotated[
        str, typer.Option("--leader-election-name", help="name of the Lease")
    ] = "kwf",
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
    inline_service_account: Annotated[
        str,
        typer.Option(
            "--inline-service-account",
            envvar="KWF_INLINE_SERVICE_ACCOUNT",
            help="inline steps read Secrets of namespace NS as ServiceAccount NS/<this>, by impersonation",
        ),
    ] = "kwf-inline",
    inline_deny_cidr: Annotated[
        list[str] | None,
        typer.Option(
            "--inline-deny-cidr",
            help="a range inline steps may not reach, e.g. the pod or service CIDR (repeatable)",
        ),
    ] = None,
    inline_allow_cidr: Annotated[
        list[str] | None,
        typer.Option(
            "--inline-allow-cidr",
            help="a range inline steps may reach even if denied, loopback included (repeatable)",
        ),
    ] = None,
    inline_allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--inline-allow-host",
            help="a host name inline steps may reach whatever it resolves to (repeatable)",
        ),
    ] = None,
    webhook_port: Annotated[
        int,
        typer.Option(
            "--webhook-port",
            envvar="KWF_WEBHOOK_PORT",
            min=0,
            max=65535,
            help="serve the admission webhook (HTTPS POST /validate) on this port; 0: off",
        ),
    ] = 0,
    webhook_host: Annotated[
        str, typer.Option("--webhook-host", envvar="KWF_WEBHOOK_HOST", help="address the webhook listens on")
    ] = "0.0.0.0",
    webhook_cert: Annotated[
        str | None,
        typer.Option(
            "--webhook-cert",
            envvar="KWF_WEBHOOK_CERT",
            help="PEM serving certificate of the webhook (read again when it changes)",
        ),
    ] = None,
    webhook_key: Annotated[
        str | None,
        typer.Option("--webhook-key", envvar="KWF_WEBHOOK_KEY", help="PEM private key of --webhook-cert"),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
) -> None:
    """Run the kwf operator in the foreground until SIGINT/SIGTERM."""
    # Imported here: kopf and the API client take seconds to import, which
    # every other `kwf` command would pay otherwise. kopf also imports
    # kubernetes_asyncio when it can, only to recognise that client's objects
    # and to log in with it; kwf does neither, and that import alone is 60% of
    # the operator's start-up (a restart or a failover waits for it).
    sys.modules.setdefault("kubernetes_asyncio", None)  # type: ignore[arg-type]
    from kwf.operator.admission import certificate_from
    from kwf.operator.main import Leadership, LeadershipLost, Options, run
    from kwf.operator.network import NetworkPolicy
    from kwf.operator.step_secrets import check_service_account_name

    if all_namespaces and namespace:
        raise typer.BadParameter("use either --namespace or --all-namespaces", param_hint="--namespace")
    try:
        network = NetworkPolicy.from_flags(
            inline_deny_cidr or (), inline_allow_cidr or (), inline_allow_host or ()
        )
        check_service_account_name(inline_service_account)
        certificate = certificate_from(webhook_cert, webhook_key) if webhook_port else None
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx2", "httpcore2", "kopf"):
        logging.getLogger(noisy).setLevel(logging.INFO if noisy == "kopf" else logging.WARNING)
    leadership = None
    if leader_election:
        # In a pod, its name: a restarted container takes its own Lease back at once.
        identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
        leadership = Leadership(identity, leader_election_name, leader_election_namespace or None)
    options = Options(
        namespaces=tuple(namespace or ()),
        kubeconfig=kubeconfig,
        runner_image=runner_image or os.environ.get("KWF_RUNNER_IMAGE") or DEFAULT_RUNNER_IMAGE,
        runner_pull_policy=runner_pull_policy,
        step_service_account=step_service_account or None,
        leader_election=leadership,
        metrics_port=metrics_port,
        liveness_port=liveness_port,
        inline=inline,
        inline_concurrency=inline_concurrency,
        inline_network=network,
        inline_service_account=inline_service_account,
        webhook_port=webhook_port or None,
        webhook_host=webhook_host,
        webhook_certificate=certificate,
    )
    try:
        asyncio.run(run(options))
    except LeadershipLost as lost:
        logging.getLogger("kwf.operator").error("%s: exiting", lost)
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    app.command("operator")(operator)
