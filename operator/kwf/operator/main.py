"""The operator process: kopf watches the runs, our own watches follow their
children, one controller reconciles. Shuts down cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import kopf

from kwf.api import GROUP, VERSION
from kwf.engine.types import Limits
from kwf.k8s.api import Client, Config, load_config
from kwf.k8s.manifests import PodOptions
from kwf.operator import metrics
from kwf.operator.controller import Controller, Settings
from kwf.operator.inline import DEFAULT_CONCURRENCY
from kwf.operator.schedules import Schedules
from kwf.operator.watch import Watches

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Options:
    namespaces: Sequence[str] = ()  # empty: every namespace
    kubeconfig: str | None = None
    runner_image: str = "kwf.local/runner:dev"
    metrics_port: int | None = None
    liveness_port: int | None = None
    inline: bool = False
    inline_concurrency: int = DEFAULT_CONCURRENCY
    limits: Limits = dataclasses.field(default_factory=Limits)


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


def settings() -> kopf.OperatorSettings:
    s = kopf.OperatorSettings()
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
    pod = PodOptions(runner_image=options.runner_image)
    stop = stop or asyncio.Event()
    async with Client(config) as api:
        controller = Controller(
            api,
            Settings(
                pod=pod,
                limits=options.limits,
                inline=options.inline,
                inline_concurrency=options.inline_concurrency,
            ),
        )
        controller.inline.warm_up()
        schedules = Schedules.using(api)
        watches = Watches(api, controller, list(options.namespaces) or None, schedules)
        watching = asyncio.create_task(watches.start(), name="child watches")
        liveness = f"http://0.0.0.0:{options.liveness_port}/healthz" if options.liveness_port else None
        kopf_ready = asyncio.Event()
        announcing = asyncio.create_task(_announce(controller, kopf_ready, options), name="ready")
        try:
            await kopf.operator(
                registry=registry_for(controller, config, schedules),
                settings=settings(),
                clusterwide=not options.namespaces,
                namespaces=list(options.namespaces),
                liveness_endpoint=liveness,
                stop_flag=stop,
                ready_flag=kopf_ready,
                standalone=True,
            )
        finally:
            announcing.cancel()
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
            await controller.queue.close()
            await schedules.close()
            await controller.inline.close()
            await watches.stop()
            await controller.events.drain()


async def _announce(controller: Controller, kopf_ready: asyncio.Event, options: Options) -> None:
    await asyncio.gather(controller.synced.wait(), kopf_ready.wait())
    where = ", ".join(options.namespaces) or "all namespaces"
    inline = (
        f"inline steps here (up to {options.inline_concurrency} at once)"
        if options.inline
        else "inline steps in pods"
    )
    logger.info("kwf operator ready: watching %s, runner image %s, %s", where, options.runner_image, inline)
