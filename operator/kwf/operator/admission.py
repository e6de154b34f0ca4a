"""The validating admission webhook: ``kubectl apply`` refuses a Job or
Workflow that ``kwf lint`` would refuse.

The CRD's schema checks types and its CEL rules, but it cannot bound the
depth or size of free-form JSON (params, initialState) nor estimate what a
``when`` costs; :func:`kwf.engine.validation.problems` does both, and the
graph checks besides. The operator still sets aside anything that gets past
(the webhook may be off or down); this says no at the door, naming the field.

Every replica serves it, a standby too: it needs no Lease, only the spec.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from kwf.api import GROUP
from kwf.engine.validation import problems

logger = logging.getLogger(__name__)

#: The API server sends at most this much (its own limit on a request body).
MAX_BODY = 3 * 1024 * 1024
#: Problems named in one refusal; the rest are counted.
MAX_LISTED = 20
#: Characters of a refusal's message.
MAX_MESSAGE = 4096
REVIEW = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}
KINDS = {"Job", "Workflow"}


class MalformedReview(ValueError):
    """The body is not an AdmissionReview admission.k8s.io/v1 with a request."""


def respond(review: Any) -> dict[str, Any]:
    """The AdmissionReview answering ``review`` (parsed JSON). Pure; raises
    :class:`MalformedReview` when there is nothing to answer."""
    if not isinstance(review, Mapping):
        raise MalformedReview(f"expected a JSON object, got {type(review).__name__}")
    if review.get("apiVersion") != REVIEW["apiVersion"] or review.get("kind") != REVIEW["kind"]:
        raise MalformedReview(
            f"expected apiVersion {REVIEW['apiVersion']} and kind {REVIEW['kind']}, got "
            f"{review.get('apiVersion')!r} and {review.get('kind')!r}"
        )
    request = review.get("request")
    if not isinstance(request, Mapping):
        raise MalformedReview("request: missing or not an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise MalformedReview("request.uid: missing or not a string")
    return {**REVIEW, "response": {"uid": uid, **_decide(request)}}


def _decide(request: Mapping[str, Any]) -> dict[str, Any]:
    operation = request.get("operation")
    if operation not in ("CREATE", "UPDATE") or request.get("subResource"):
        # Deletes, and status writes (the operator's), carry no spec to judge.
        return {"allowed": True}
    kind = request.get("kind")
    group = kind.get("group") if isinstance(kind, Mapping) else None
    name = kind.get("kind") if isinstance(kind, Mapping) else None
    if group != GROUP or name not in KINDS:
        # A configuration that sends more than it should must not lock anything out.
        return {"allowed": True, "warnings": [f"kwf validates only Jobs and Workflows of {GROUP}"]}
    obj = request.get("object")
    if not isinstance(obj, Mapping):
        return _refuse("request.object: missing or not an object")
    old = request.get("oldObject")
    if operation == "UPDATE" and isinstance(old, Mapping) and old.get("spec") == obj.get("spec"):
        # Labels, annotations, finalizers: a spec admitted before (or before
        # this webhook existed) must never stop its object from being deleted.
        return {"allowed": True}
    found = problems(dict(obj))
    if not found:
        return {"allowed": True}
    listed = [str(p) for p in found[:MAX_LISTED]]
    if len(found) > MAX_LISTED:
        listed.append(f"and {len(found) - MAX_LISTED} more")
    return _refuse("; ".join(listed))


def _refuse(message: str) -> dict[str, Any]:
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return {"allowed": False, "status": {"code": 422, "reason": "Invalid", "message": message}}


def answer(body: bytes) -> tuple[int, dict[str, Any]]:
    """HTTP status and JSON for a request body: parsing included, as it is
    the costly part of a large spec."""
    try:
        review = json.loads(body)
    except (ValueError, RecursionError) as error:
        return 400, {"error": f"the body is not JSON: {str(error)[:200]}"}
    try:
        return 200, respond(review)
    except MalformedReview as error:
        return 400, {"error": f"not an AdmissionReview: {error}"}


@dataclasses.dataclass(frozen=True)
class Certificate:
    """PEM files of the serving certificate and its key, as cert-manager or a
    Secret volume updates them in place."""

    cert: Path
    key: Path

    def stamp(self) -> tuple[float, ...]:
        return tuple(p.stat().st_mtime_ns for p in (self.cert, self.key))

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        return context


class Webhook:
    """The HTTPS server: POST /validate, GET /healthz."""

    #: How often the certificate files are looked at for a new version.
    RELOAD_SECONDS = 10.0

    def __init__(self, host: str, port: int, certificate: Certificate, *, workers: int = 2) -> None:
        self.host, self.port, self.certificate = host, port, certificate
        # Its own threads: a flood of reviews queues here and never takes the
        # threads that plan runs.
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="kwf-admission")
        self._runner: web.AppRunner | None = None
        self._reloading: asyncio.Task[None] | None = None
        self._stamp: tuple[float, ...] = ()
        self._current: ssl.SSLContext | None = None

    async def start(self) -> None:
        self._stamp = await asyncio.to_thread(self.certificate.stamp)
        listening = await asyncio.to_thread(self.certificate.context)
        self._current = listening
        # Each handshake takes the newest context: a rotated certificate is
        # served without a restart, and open connections keep theirs.
        listening.sni_callback = self._newest
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/validate", self._validate)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=listening)
        await site.start()
        self._reloading = asyncio.create_task(self._reload(), name="webhook certificate")
        logger.info("admission webhook on https://%s:%d/validate", self.host, self.port)

    async def stop(self) -> None:
        if self._reloading is not None:
            self._reloading.cancel()
            await asyncio.gather(self._reloading, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _newest(self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        if self._current is not None and self._current is not context:
            connection.context = self._current

    async def _reload(self) -> None:
        while True:
            await asyncio.sleep(self.RELOAD_SECONDS)
            try:
                stamp = await asyncio.to_thread(self.certificate.stamp)
                if stamp != self._stamp:
                    self._current = await asyncio.to_thread(self.certificate.context)
                    self._stamp = stamp
                    logger.info("admission webhook: serving the new certificate of %s", self.certificate.cert)
            except (OSError, ssl.SSLError) as error:
                # Mid-rotation (a key that does not match yet): keep the old one, look again.
                logger.warning("admission webhook: keeping the current certificate: %s", error)

    async def _validate(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": f"the body is larger than {MAX_BODY} bytes"}, status=413)
        loop = asyncio.get_running_loop()
        status, reply = await loop.run_in_executor(self._pool, answer, body)
        if status != 200:
            logger.warning("admission webhook: %s", reply["error"])
        return web.json_response(reply, status=status)

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"ok": True})


def certificate_from(cert: str | None, key: str | None) -> Certificate:
    """The flags' files, checked to exist (a missing one is a start-up error)."""
    if not cert or not key:
        raise ValueError("--webhook-port needs --webhook-cert and --webhook-key")
    for flag, path in (("--webhook-cert", Path(cert)), ("--webhook-key", Path(key))):
        if not path.is_file():
            raise ValueError(f"{flag}: {path} is not a file")
    return Certificate(Path(cert), Path(key))
