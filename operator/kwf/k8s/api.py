"""A small async JSON client for the Kubernetes API.

Everything kwf says to the API server goes through :class:`Client`: plain
JSON in and out (the models parse it at the edges), typed errors, watches
that survive a ``410 Gone``. It reads a kubeconfig (client certificate or
token) or the in-cluster service account. One pooled HTTP/1.1 connection set
serves every call, so a step's "create the next child Job" costs one request
on a warm connection.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Literal

import httpx2
import pydantic_core
import yaml

JSON = Any
PatchKind = Literal["merge", "json", "strategic"]

_PATCH_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}

IN_CLUSTER_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


# -------------------------------------------------------------------- errors


class ApiError(Exception):
    """The API server said no; ``status`` is the HTTP code, ``reason`` the Status reason."""

    def __init__(self, status: int, reason: str, message: str, body: Mapping[str, JSON] | None = None):
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = dict(body or {})


class NotFound(ApiError):
    pass


class AlreadyExists(ApiError):
    pass


class Conflict(ApiError):
    """A resourceVersion precondition failed: someone wrote in between."""


class Invalid(ApiError):
    """The object was rejected by validation; ``message`` names the field(s)."""


class Gone(ApiError):
    """The resourceVersion a watch started from is too old: list again."""


def _error(status: int, body: Mapping[str, JSON]) -> ApiError:
    reason = str(body.get("reason") or "")
    message = str(body.get("message") or body or "")
    if status == 404:
        return NotFound(status, reason or "NotFound", message, body)
    if status == 409:
        if reason == "AlreadyExists":
            return AlreadyExists(status, reason, message, body)
        return Conflict(status, reason or "Conflict", message, body)
    if status == 410:
        return Gone(status, reason or "Expired", message, body)
    if status == 422 or reason == "Invalid":
        return Invalid(status, reason or "Invalid", message, body)
    return ApiError(status, reason or "Error", message, body)


# ----------------------------------------------------------------- resources


@dataclasses.dataclass(frozen=True)
class Resource:
    """A resource type, qualified by its group: ``jobs`` is both batch's and kwf's."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base


KWF_JOBS = Resource("workflow.kwf.dev", "v1alpha1", "jobs")
WORKFLOWS = Resource("workflow.kwf.dev", "v1alpha1", "workflows")
BATCH_JOBS = Resource("batch", "v1", "jobs")
PODS = Resource("", "v1", "pods")
EVENTS = Resource("", "v1", "events")
SECRETS = Resource("", "v1", "secrets")
NAMESPACES = Resource("", "v1", "namespaces", namespaced=False)


# -------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class Config:
    """Where the API server is and how to prove who we are."""

    server: str
    ssl_context: ssl.SSLContext | bool
    token: str | None = None
    namespace: str = "default"
    # The raw material, for other clients of the same cluster (kopf's login).
    ca_data: bytes | None = dataclasses.field(default=None, repr=False)
    cert_data: bytes | None = dataclasses.field(default=None, repr=False)
    key_data: bytes | None = dataclasses.field(default=None, repr=False)
    insecure: bool = False


def _material(entry: Mapping[str, JSON], key: str, base: Path) -> bytes | None:
    """A kubeconfig's certificate: inline ``<key>-data`` (base64) or a file path."""
    data = entry.get(f"{key}-data")
    if data:
        return base64.b64decode(str(data))
    path = entry.get(key)
    if path:
        return (base / str(path)).read_bytes()
    return None


def _ssl_context(ca: bytes | None, cert: bytes | None, key: bytes | None, insecure: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif ca:
        context.load_verify_locations(cadata=ca.decode())
    if cert and key:
        # ssl only loads a key pair from files: a private folder, removed at once.
        with tempfile.TemporaryDirectory(prefix="kwf-") as folder:
            cert_file, key_file = Path(folder, "cert.pem"), Path(folder, "key.pem")
            cert_file.write_bytes(cert)
            key_file.touch(mode=0o600)
            key_file.write_bytes(key)
            context.load_cert_chain(cert_file, key_file)
    return context


def load_kubeconfig(path: str | os.PathLike[str], context: str | None = None) -> Config:
    """Read a kubeconfig file (blocking: call it before the loop or in a thread)."""
    file = Path(path).expanduser()
    doc = yaml.safe_load(file.read_text()) or {}
    name = context or doc.get("current-context")
    contexts = {c["name"]: c.get("context", {}) for c in doc.get("contexts") or []}
    if name not in contexts:
        raise ValueError(f"{file}: no context {name!r}")
    ctx = contexts[name]
    clusters = {c["name"]: c.get("cluster", {}) for c in doc.get("clusters") or []}
    users = {u["name"]: u.get("user", {}) for u in doc.get("users") or []}
    cluster, user = clusters.get(ctx.get("cluster"), {}), users.get(ctx.get("user"), {})
    if not cluster.get("server"):
        raise ValueError(f"{file}: cluster of context {name!r} has no server")
    base = file.parent
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = (base / user["tokenFile"]).read_text().strip()
    ca = _material(cluster, "certificate-authority", base)
    cert = _material(user, "client-certificate", base)
    key = _material(user, "client-key", base)
    insecure = bool(cluster.get("insecure-skip-tls-verify"))
    return Config(
        server=cluster["server"].rstrip("/"),
        ssl_context=_ssl_context(ca, cert, key, insecure),
        token=token,
        namespace=ctx.get("namespace") or "default",
        ca_data=ca,
        cert_data=cert,
        key_data=key,
        insecure=insecure,
    )


def load_in_cluster() -> Config:
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
    if ":" in host:
        host = f"[{host}]"
    namespace_file = IN_CLUSTER_DIR / "namespace"
    ca = (IN_CLUSTER_DIR / "ca.crt").read_bytes()
    return Config(
        server=f"https://{host}:{port}",
        ssl_context=_ssl_context(ca, None, None, False),
        ca_data=ca,
        token=(IN_CLUSTER_DIR / "token").read_text().strip(),
        namespace=namespace_file.read_text().strip() if namespace_file.exists() else "default",
    )


def load_config(kubeconfig: str | os.PathLike[str] | None = None) -> Config:
    """An explicit kubeconfig, else ``$KUBECONFIG``, else in-cluster, else ``~/.kube/config``."""
    if kubeconfig:
        return load_kubeconfig(kubeconfig)
    if os.environ.get("KUBECONFIG"):
        return load_kubeconfig(os.environ["KUBECONFIG"].split(os.pathsep)[0])
    if os.environ.get("KUBERNETES_SERVICE_HOST") and (IN_CLUSTER_DIR / "token").exists():
        return load_in_cluster()
    return load_kubeconfig("~/.kube/config")


# -------------------------------------------------------------------- client


@dataclasses.dataclass(frozen=True)
class WatchEvent:
    """``type`` is ADDED, MODIFIED, DELETED; bookmarks and errors are handled inside."""

    type: str
    object: dict[str, JSON]


KEEPALIVE_SECONDS = 60.0


class Client:
    """Async JSON client. Use as ``async with Client(config) as api: ...``."""

    def __init__(self, config: Config, *, timeout: float = 30.0, max_connections: int = 50):
        headers = {"Accept": "application/json", "User-Agent": "kwf"}
        if config.token:
            headers["Authorization"] = f"Bearer {config.token}"
        self.config = config
        self._http = httpx2.AsyncClient(
            base_url=config.server,
            verify=config.ssl_context,
            headers=headers,
            timeout=httpx2.Timeout(timeout),
            # Connections are kept a minute (httpx2's default is 5 s): a step's
            # next write comes seconds later, and a new one costs a TLS handshake.
            limits=httpx2.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=KEEPALIVE_SECONDS,
            ),
            trust_env=False,
        )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: JSON = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> JSON:
        content = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if content is not None else None
        response = await self._http.request(
            method, path, content=content, params=dict(params or {}), headers=headers
        )
        if response.status_code >= 400:
            raise _error(response.status_code, _json_or_text(response.content))
        if not response.content:
            return None
        return pydantic_core.from_json(response.content)

    # -- objects

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, JSON]:
        result: dict[str, JSON] = await self.request("GET", resource.path(namespace, name))
        return result

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> dict[str, JSON]:
        """The list object: ``items`` and ``metadata.resourceVersion`` (to watch from)."""
        params = _selectors(label_selector, field_selector)
        result: dict[str, JSON] = await self.request("GET", resource.path(namespace), params=params)
        return result

    async def create(
        self, resource: Resource, body: Mapping[str, JSON], namespace: str | None = None
    ) -> dict[str, JSON]:
        result: dict[str, JSON] = await self.request("POST", resource.path(namespace), body=body)
        return result

    async def patch(
        self,
        resource: Resource,
        name: str,
        patch: JSON,
        namespace: str | None = None,
        *,
        kind: PatchKind = "merge",
        subresource: str | None = None,
        resource_version: str | None = None,
    ) -> dict[str, JSON]:
        """Patch an object or its subresource (``status``).

        ``resource_version`` makes it conditional: the API server answers
        Conflict if the object changed since that version. For merge patches it
        travels in the patch's metadata; for JSON patches as a ``test`` op.
        """
        if resource_version is not None:
            if kind == "json":
                patch = [
                    {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
                    *patch,
                ]
            else:
                patch = dict(patch)
                patch["metadata"] = {**patch.get("metadata", {}), "resourceVersion": resource_version}
        try:
            result: dict[str, JSON] = await self.request(
                "PATCH",
                resource.path(namespace, name, subresource),
                body=patch,
                content_type=_PATCH_TYPES[kind],
            )
        except Invalid as error:
            # A failed "test" op is the JSON-patch way of saying Conflict.
            if kind == "json" and resource_version is not None and "test" in error.message:
                raise Conflict(409, "Conflict", error.message, error.body) from error
            raise
        return result

    async def replace(
        self,
        resource: Resource,
        name: str,
        body: Mapping[str, JSON],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
    ) -> dict[str, JSON]:
        result: dict[str, JSON] = await self.request(
            "PUT", resource.path(namespace, name, subresource), body=body
        )
        return result

    async def delete(
        self,
        resource: Resource,
        name: str,
        namespace: str | None = None,
        *,
        propagation_policy: Literal["Background", "Foreground", "Orphan"] | None = None,
        uid: str | None = None,
    ) -> dict[str, JSON] | None:
        """Delete; ``uid`` makes sure it is the object we mean, not a namesake."""
        body: dict[str, JSON] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation_policy:
            body["propagationPolicy"] = propagation_policy
        if uid:
            body["preconditions"] = {"uid": uid}
        result: dict[str, JSON] | None = await self.request(
            "DELETE", resource.path(namespace, name), body=body
        )
        return result

    async def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        params = {"container": container} if container else {}
        response = await self._http.get(PODS.path(namespace, pod, "log"), params=params)
        if response.status_code >= 400:
            raise _error(response.status_code, _json_or_text(response.content))
        return response.text

    # -- watches

    async def watch(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[WatchEvent]:
        """One watch stream from ``resource_version``; ends when the server closes
        it. Raises :class:`Gone` when that version is too old. Bookmarks are
        yielded too (type BOOKMARK) so the caller can move its version on."""
        params = _selectors(label_selector, field_selector)
        params.update(watch="true", allowWatchBookmarks="true", timeoutSeconds=str(timeout_seconds))
        if resource_version:
            params["resourceVersion"] = resource_version
        timeout = httpx2.Timeout(30.0, read=timeout_seconds + 30.0)
        async with self._http.stream(
            "GET", resource.path(namespace), params=params, timeout=timeout
        ) as response:
            if response.status_code >= 400:
                raise _error(response.status_code, _json_or_text(await response.aread()))
            async for line in response.aiter_lines():
                if not line:
                    continue
                event = pydantic_core.from_json(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise _error(int(status.get("code") or 500), status)
                yield WatchEvent(type=event["type"], object=event["object"])

    async def list_and_watch(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[WatchEvent]:
        """Every object, then every change, forever: lists (each object as an
        ADDED event, then a ``SYNCED`` marker whose object holds the list's
        items), watches from the list's version, and lists again on 410 Gone."""
        version: str | None = None
        while True:
            if version is None:
                listing = await self.list(
                    resource, namespace, label_selector=label_selector, field_selector=field_selector
                )
                version = listing["metadata"].get("resourceVersion")
                items = listing.get("items") or []
                kind = resource_kind(listing)
                for item in items:
                    item.setdefault("kind", kind)
                    item.setdefault("apiVersion", resource.api_version)
                    yield WatchEvent("ADDED", item)
                yield WatchEvent("SYNCED", {"items": items})
            try:
                async for event in self.watch(
                    resource,
                    namespace,
                    resource_version=version,
                    label_selector=label_selector,
                    field_selector=field_selector,
                    timeout_seconds=timeout_seconds,
                ):
                    version = event.object.get("metadata", {}).get("resourceVersion") or version
                    if event.type != "BOOKMARK":
                        yield event
            except Gone:
                version = None
            except (httpx2.ReadTimeout, httpx2.RemoteProtocolError, httpx2.ReadError):
                continue  # the stream broke: resume from the last version seen


def resource_kind(listing: Mapping[str, JSON]) -> str:
    kind = str(listing.get("kind") or "")
    return kind.removesuffix("List")


def _selectors(label_selector: str | None, field_selector: str | None) -> dict[str, str]:
    params: dict[str, str] = {}
    if label_selector:
        params["labelSelector"] = label_selector
    if field_selector:
        params["fieldSelector"] = field_selector
    return params


def _json_or_text(content: bytes) -> dict[str, JSON]:
    with contextlib.suppress(ValueError):
        data = json.loads(content)
        if isinstance(data, dict):
            return data
    return {"message": content.decode(errors="replace")[:2000]}
