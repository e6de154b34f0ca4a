"""The operator process: kopf watches the runs, our own watches follow their
children, one controller reconciles. Shuts down cleanly on SIGINT/SIGTERM.

With leader election, a replica first waits for the Lease and starts nothing
until it leads; if it loses the Lease it stops everything and exits with an
error, for its Deployment to start it again as a standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import AsyncIterator, Sequence
from typing import Any

import kopf

from kwf.api import GROUP, VERSION
from kwf.engine.types import Limits
from kwf.k8s.api import Client, Config, load_config
from kwf.k8s.manifests import PodOptions
from kwf.operator import metrics
from kwf.operator.admission import Certificate, Webhook
from kwf.operator.controller import Controller, Settings
from kwf.operator.inline import DEFAULT_CONCURRENCY
from kwf.operator.leader import LeaderElection
from kwf.operator.network import NetworkPolicy
from kwf.operator.schedules import Schedules
from kwf.operator.step_secrets import DEFAULT_INLINE_SERVICE_ACCOUNT
from kwf.operator.watch import Watches

logger = logging.getLogger(__name__)


class LeadershipLost(RuntimeError):
    """This replica stopped because another one may lead now."""


@dataclasses.dataclass(frozen=True)
class Leadership:
    """Which Lease the replicas compete for, and who this one is."""

    identity: str
    name: str = "kwf"
    namespace: str | None = None  # None: the kubeconfig's (in a pod: its own) namespace


@dataclasses.dataclass(frozen=True)
class Options:
    namespaces: Sequence[str] = ()  # empty: every namespace
    kubeconfig: str | None = None
    runner_image: str = "kwf.local/runner:dev"
    runner_pull_policy: str = "IfNotPresent"
    step_service_account: str | None = None
    leader_election: Leadership | None = None
    metrics_port: int | None = None
    liveness_port: int | None = None
    inline: bool = False
    inline_concurrency: int = DEFAULT_CONCURRENCY
    inline_network: NetworkPolicy = dataclasses.field(default_factory=NetworkPolicy)
    inline_service_account: str = DEFAULT_INLINE_SERVICE_ACCOUNT
    limits: Limits = dataclasses.field(default_factory=Limits)
    webhook_port: int | None = None  # None: no admission webhook
    webhook_host: str = "0.0.0.0"
    webhook_certificate: Certificate | None = None


def registry_for(
    controller: Controller, config: Config, schedules: Schedules | None = None
) -> kopf.OperatorRegistry:
    """kopf's part: every event of a run (create, change, resume, delete) lands in
    the same queue. The handler only records the body; it never blocks."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        # kopf connects with the very credentials our own client uses.
        return kopf.ConnectionInfo(
            server=config.server,
            ca_data=config.ca_data,
            insecure=config.insecure,
            token=config.token,
            certificate_data=config.cert_data,
            private_key_data=config.key_data,
            default_namespace=config.namespace,
        )

    @kopf.on.event(GROUP, VERSION, "jobs", registry=registry)  # type: ignore[arg-type]
    async def run_event(event: dict[str, Any], body: kopf.Body, **_: Any) -> None:
        raw = dict(body)
        controller.run_changed(raw, deleted=event.get("type") == "DELETED")
        if schedules is not None:
            schedules.run_changed(raw)

    return registry


def settings(*, clusterwide: bool = True) -> kopf.OperatorSettings:
    s = kopf.OperatorSettings()
    # Watching a list of namespaces, the operator holds no cluster-wide right
    # (the chart binds it in those namespaces only): kopf's scan of every
    # namespace and CRD would be refused, and retried for a minute before
    # the first run is handled.
    s.scanning.disabled = not clusterwide
    s.peering.standalone = True
    s.posting.enabled = False  # our own Events say what happened, in the user's words
    s.persistence.finalizer = f"{GROUP}/kopf"
    s.watching.server_timeout = 300
    s.watching.client_timeout = 330
    return s


async def run(options: Options, stop: asyncio.Event | None = None) -> None:
    config = await asyncio.to_thread(load_config, options.kubeconfig)
    if options.metrics_port is not None:
        metrics.serve(options.metrics_port)
    stop = stop or asyncio.Event()
    async with _admission(options), Client(config) as api:
        leader: LeaderElection | None = None
        if options.leader_election is not None:
            chosen = options.leader_election
            leader = LeaderElection(api, chosen.namespace or config.namespace, chosen.name, chosen.identity)
            if not await _wait_to_lead(leader, stop, options.liveness_port):
                return
        try:
            await _operate(api, config, options, stop, leader)
        finally:
            if leader is not None:
                await leader.close()
        if leader is not None and leader.lost.is_set():
            raise LeadershipLost(f"lost the lead of {leader.where}")


async def _wait_to_lead(leader: LeaderElection, stop: asyncio.Event, liveness_port: int | None) -> bool:
    """Stand by until this replica leads (True) or is told to stop (False)."""
    async with _standby_health(liveness_port), _stop_on_signals(stop):
        acquiring = asyncio.create_task(leader.acquire(), name="leader election")
        stopping = asyncio.create_task(stop.wait(), name="stop")
        done, _ = await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if acquiring in done:
            acquiring.result()  # an unexpected error surfaces here
            return True
        acquiring.cancel()
        await asyncio.gather(acquiring, stopping, return_exceptions=True)
        return False


async def _operate(
    api: Client, config: Config, options: Options, stop: asyncio.Event, leader: LeaderElection | None
) -> None:
    pod = PodOptions(
        runner_image=options.runner_image,
        image_pull_policy=options.runner_pull_policy,
        service_account=options.step_service_account,
    )
    controller = Controller(
        api,
        Settings(
            pod=pod,
            limits=options.limits,
            inline=options.inline,
            inline_concurrency=options.inline_concurrency,
            # The API server's addresses as they resolve at start: inline steps never reach them.
            inline_network=await options.inline_network.with_api_server(config.server),
            inline_service_account=options.inline_service_account,
        ),
    )
    controller.inline.warm_up()
    schedules = Schedules.using(api)
    watches = Watches(api, controller, list(options.namespaces) or None, schedules)
    watching = asyncio.create_task(watches.start(), name="child watches")
    liveness = f"http://0.0.0.0:{options.liveness_port}/healthz" if options.liveness_port else None
    kopf_ready = asyncio.Event()
    announcing = asyncio.create_task(_announce(controller, kopf_ready, options), name="ready")
    following = asyncio.create_task(_stop_when_lost(leader, controller, stop), name="leadership")
    try:
        await kopf.operator(
            registry=registry_for(controller, config, schedules),
            settings=settings(clusterwide=not options.namespaces),
            clusterwide=not options.namespaces,
            namespaces=list(options.namespaces),
            liveness_endpoint=liveness,
            stop_flag=stop,
            ready_flag=kopf_ready,
            standalone=True,
        )
    finally:
        following.cancel()
        announcing.cancel()
        watching.cancel()
        await asyncio.gather(watching, following, return_exceptions=True)
        await controller.queue.close()
        await schedules.close()
        await controller.inline.close()
        await watches.stop()
        await controller.close()
        await controller.events.drain()


async def _stop_when_lost(leader: LeaderElection | None, controller: Controller, stop: asyncio.Event) -> None:
    if leader is None:
        return
    await leader.lost.wait()
    # Reconciles stop first, at once: another replica may already be leading.
    await controller.queue.close()
    stop.set()


@contextlib.asynccontextmanager
async def _admission(options: Options) -> AsyncIterator[None]:
    """The admission webhook, served from before the wait for the Lease: a
    standby answers it too, and the API server may ask either replica."""
    if options.webhook_port is None or options.webhook_certificate is None:
        yield
        return
    webhook = Webhook(options.webhook_host, options.webhook_port, options.webhook_certificate)
    await webhook.start()
    try:
        yield
    finally:
        await webhook.stop()


@contextlib.asynccontextmanager
async def _stop_on_signals(stop: asyncio.Event) -> AsyncIterator[None]:
    """SIGINT/SIGTERM while standing by stop the wait (kopf handles them later)."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


@contextlib.asynccontextmanager
async def _standby_health(port: int | None) -> AsyncIterator[None]:
    """Answer the liveness and readiness probes while standing by: a standby is
    healthy, and kopf only serves /healthz once it runs."""
    if port is None:
        yield
        return

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(
            OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError
        ):
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            found = request.split(b" ", 2)[1:2] == [b"/healthz"]
            body = b'{"standby": true}' if found else b'{"error": "not found"}'
            status = b"200 OK" if found else b"404 Not Found"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "0.0.0.0", port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


async def _announce(controller: Controller, kopf_ready: asyncio.Event, options: Options) -> None:
    await asyncio.gather(controller.synced.wait(), kopf_ready.wait())
    where = ", ".join(options.namespaces) or "all namespaces"
    inline = (
        f"inline steps here (up to {options.inline_concurrency} at once; {options.inline_network.describe()})"
        if options.inline
        else "inline steps in pods"
    )
    logger.info("kwf operator ready: watching %s, runner image %s, %s", where, options.runner_image, inline)
