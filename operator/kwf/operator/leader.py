"""Leader election on a coordination.k8s.io/v1 Lease, the way client-go does it.

Replicas of the operator compete for one Lease. The holder writes its name
and a fresh ``renewTime`` every few seconds; the others read it and wait. When
the holder's ``renewTime + leaseDurationSeconds`` has passed, a candidate
writes itself in, conditional on the resourceVersion it read, so of two
candidates only one can win. A leader that cannot renew its Lease within the
lease duration says so through :attr:`LeaderElection.lost`: by then another
replica may lead, and the only safe reaction is to stop.

:func:`decide` is the whole decision, pure, with the time as an argument;
:class:`LeaderElection` only reads, writes and waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2

from kwf.k8s.api import AlreadyExists, ApiError, Client, Conflict, NotFound, Resource

JSON = Any
logger = logging.getLogger(__name__)

LEASES = Resource("coordination.k8s.io", "v1", "leases")


class Action(enum.Enum):
    CREATE = "create"  # no Lease yet: create it, holding it
    TAKE_OVER = "take over"  # the holder's term ran out, or it let go
    RENEW = "renew"  # ours: move renewTime on
    WAIT = "wait"  # someone else's term still runs

    @property
    def leading(self) -> bool:
        """Whether, once the write succeeds, this replica leads."""
        return self is not Action.WAIT


@dataclasses.dataclass(frozen=True)
class Decision:
    action: Action
    #: who holds the Lease once the action is done ("" when nobody does)
    holder: str
    #: when the holder's term runs out unless it renews (None: no term, free to take)
    expires: datetime | None
    #: the Lease spec to write; None when waiting
    spec: Mapping[str, JSON] | None = None


def micro_time(moment: datetime) -> str:
    """A metav1.MicroTime: RFC 3339 in UTC with microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: JSON) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def term_end(spec: Mapping[str, JSON], default_seconds: int) -> datetime | None:
    """When the holder's term runs out: its last renewal (or acquisition) plus
    the duration it declared. None when the Lease says nothing usable."""
    renewed = _parse_time(spec.get("renewTime")) or _parse_time(spec.get("acquireTime"))
    if renewed is None:
        return None
    seconds = spec.get("leaseDurationSeconds")
    if not isinstance(seconds, int) or seconds <= 0:
        seconds = default_seconds
    return renewed + timedelta(seconds=seconds)


def decide(
    lease: Mapping[str, JSON] | None, identity: str, now: datetime, *, lease_seconds: int = 15
) -> Decision:
    """What ``identity`` should do about ``lease`` (the object as read, None if
    absent) at ``now``."""
    if not identity:
        raise ValueError("identity: must not be empty")
    mine = {"holderIdentity": identity, "leaseDurationSeconds": lease_seconds, "renewTime": micro_time(now)}
    expires = now + timedelta(seconds=lease_seconds)
    if lease is None:
        spec = {**mine, "acquireTime": micro_time(now), "leaseTransitions": 0}
        return Decision(Action.CREATE, identity, expires, spec)
    current: Mapping[str, JSON] = lease.get("spec") or {}
    holder = str(current.get("holderIdentity") or "")
    transitions = current.get("leaseTransitions")
    transitions = transitions if isinstance(transitions, int) and transitions >= 0 else 0
    if holder == identity:
        # Still ours (a restarted container keeps its pod's name): renew.
        spec = {**current, **mine}
        spec.setdefault("acquireTime", micro_time(now))
        return Decision(Action.RENEW, identity, expires, spec)
    end = term_end(current, lease_seconds)
    if holder and end is not None and now < end:
        return Decision(Action.WAIT, holder, end)
    spec = {**mine, "acquireTime": micro_time(now), "leaseTransitions": transitions + 1}
    return Decision(Action.TAKE_OVER, identity, expires, spec)


def released(lease: Mapping[str, JSON], identity: str, now: datetime) -> Mapping[str, JSON] | None:
    """The spec that hands the Lease back (a standby may take it at once), or
    None when it is not ours to hand back."""
    current: Mapping[str, JSON] = lease.get("spec") or {}
    if current.get("holderIdentity") != identity:
        return None
    return {**current, "holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": micro_time(now)}


class LeaderElection:
    """Acquire the Lease ``namespace/name`` as ``identity``, then keep it.

    ``await acquire()`` returns once this replica leads; from then on a task
    renews every ``renew_seconds`` (retrying every ``retry_seconds`` after a
    failure), and sets :attr:`lost` when the Lease was not renewed within
    ``lease_seconds`` or someone else holds it.
    """

    def __init__(
        self,
        api: Client,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: int = 15,
        renew_seconds: float = 5,
        retry_seconds: float = 2,
    ) -> None:
        if not 0 < renew_seconds < lease_seconds:
            raise ValueError(
                f"renew_seconds: {renew_seconds} must be above 0 and under lease_seconds ({lease_seconds})"
            )
        if retry_seconds <= 0:
            raise ValueError(f"retry_seconds: {retry_seconds} must be above 0")
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.retry_seconds = retry_seconds
        self.lost = asyncio.Event()
        self.leading = False
        self._renewed = 0.0  # time.monotonic() of the last successful write, taken before sending it
        self._renewing: asyncio.Task[None] | None = None

    @property
    def where(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    async def attempt(self) -> Decision | None:
        """One round: read the Lease, decide, write. None when another writer
        got in between (look again later)."""
        started = time.monotonic()
        now = datetime.now(UTC)
        try:
            lease: dict[str, JSON] | None = await self.api.get(LEASES, self.name, self.namespace)
        except NotFound:
            lease = None
        decision = decide(lease, self.identity, now, lease_seconds=self.lease_seconds)
        if decision.spec is None:
            return decision
        body: dict[str, JSON] = {
            "apiVersion": LEASES.api_version,
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": dict(decision.spec),
        }
        try:
            if lease is None:
                await self.api.create(LEASES, body, self.namespace)
            else:
                # The resourceVersion read makes the write conditional: of two
                # candidates taking over the same expired term, one gets Conflict.
                body["metadata"] = _kept_metadata(lease)
                await self.api.replace(LEASES, self.name, body, self.namespace)
        except (AlreadyExists, Conflict):
            return None
        self._renewed = started
        return decision

    async def acquire(self) -> None:
        """Wait until this replica leads, then renew in the background."""
        logger.info("waiting to lead: %s as %s", self.where, self.identity)
        seen = ""
        while True:
            try:
                decision = await self.attempt()
            except (ApiError, httpx2.HTTPError, OSError) as error:
                logger.warning("reading %s failed (%s); trying again", self.where, error)
                decision = None
            if decision is not None and decision.action.leading:
                self.leading = True
                logger.info("leading as %s (%s: %s)", self.identity, self.where, decision.action.value)
                break
            if decision is not None and decision.holder != seen:
                seen = decision.holder
                logger.info("%s is held by %s; standing by", self.where, seen)
            await asyncio.sleep(self.retry_seconds)
        self._renewing = asyncio.create_task(self._keep(), name="lease renewal")

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.renew_seconds)
            reason = await self._renew()
            if reason is not None:
                self.leading = False
                logger.error("lost the lead of %s: %s; stopping", self.where, reason)
                self.lost.set()
                return

    async def _renew(self) -> str | None:
        """Renew once, retrying until the term ends; the reason when it is lost."""
        while True:
            left = self._renewed + self.lease_seconds - time.monotonic()
            if left <= 0:
                return f"not renewed within {self.lease_seconds} s"
            try:
                async with asyncio.timeout(left):
                    decision = await self.attempt()
            except TimeoutError:
                return f"not renewed within {self.lease_seconds} s"
            except (ApiError, httpx2.HTTPError, OSError) as error:
                logger.warning("renewing %s failed (%s); trying again", self.where, error)
                decision = None
            if decision is not None:
                if decision.action.leading:
                    return None
                return f"{decision.holder} holds it now"
            left = self._renewed + self.lease_seconds - time.monotonic()
            await asyncio.sleep(max(0.0, min(self.retry_seconds, left)))

    async def close(self) -> None:
        """Stop renewing; hand the Lease back if still ours, so that a standby
        need not wait for the term to run out."""
        if self._renewing is not None:
            self._renewing.cancel()
            await asyncio.gather(self._renewing, return_exceptions=True)
            self._renewing = None
        if not self.leading:
            return
        self.leading = False
        with contextlib.suppress(ApiError, httpx2.HTTPError, OSError, TimeoutError):
            async with asyncio.timeout(self.retry_seconds * 2):
                lease = await self.api.get(LEASES, self.name, self.namespace)
                spec = released(lease, self.identity, datetime.now(UTC))
                if spec is not None:
                    body = {
                        "apiVersion": LEASES.api_version,
                        "kind": "Lease",
                        "metadata": _kept_metadata(lease),
                        "spec": dict(spec),
                    }
                    await self.api.replace(LEASES, self.name, body, self.namespace)
                    logger.info("handed %s back", self.where)


def _kept_metadata(lease: Mapping[str, JSON]) -> dict[str, JSON]:
    meta: Mapping[str, JSON] = lease.get("metadata") or {}
    return {key: value for key, value in meta.items() if key != "managedFields"}
