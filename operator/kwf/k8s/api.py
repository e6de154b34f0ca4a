"""A small async JSON client for the Kubernetes API.

Everything kwf says to the API server goes through :class:`Client`: plain
JSON in and out (the models parse it at the edges), typed errors, watches
that survive a ``410 Gone``. It reads a kubeconfig (client certificate or
token) or the in-cluster service account. One pooled HTTP/1.1 connection set
serves every call, so a step's "create the next child Job" costs one request
on a warm connection.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

import httpx2

from kwf.k8s.config import IN_CLUSTER_DIR as IN_CLUSTER_DIR
from kwf.k8s.config import Config as Config
from kwf.k8s.config import load_config as load_config
from kwf.k8s.config import load_in_cluster as load_in_cluster
from kwf.k8s.config import load_kubeconfig as load_kubeconfig
from kwf.k8s.reading import Unreadable, read_event, read_list, read_object

JSON = Any
PatchKind = Literal["merge", "json", "strategic"]

_PATCH_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


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


class UnreadableAnswer(ValueError):
    """The API server's answer could not be read whole (an object nested too
    deeply, say); ``partial`` holds the top-level fields that could be."""

    def __init__(self, problem: str, partial: Mapping[str, JSON]):
        super().__init__(problem)
        self.problem = problem
        self.partial = dict(partial)


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
        """The URL path; every segment from a caller is escaped on its own, so
        a name such as ``../../kube-system/secrets/x`` stays one segment."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:  # none or empty: every namespace
            base += f"/namespaces/{segment(namespace, 'namespace')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{segment(name, 'name')}"
            if subresource is not None:
                base += f"/{segment(subresource, 'subresource')}"
        return base


def segment(value: str, what: str) -> str:
    """One path segment, percent-escaped; empty, ``.`` and ``..`` are refused:
    they would name the collection or the level above, not an object."""
    if value in ("", ".", ".."):
        raise ValueError(f"{what} {value!r} cannot name an object")
    return urllib.parse.quote(value, safe="")


KWF_JOBS = Resource("workflow.kwf.dev", "v1alpha1", "jobs")
WORKFLOWS = Resource("workflow.kwf.dev", "v1alpha1", "workflows")
BATCH_JOBS = Resource("batch", "v1", "jobs")
PODS = Resource("", "v1", "pods")
EVENTS = Resource("", "v1", "events")
SECRETS = Resource("", "v1", "secrets")
NAMESPACES = Resource("", "v1", "namespaces", namespaced=False)


# -------------------------------------------------------------------- client


@dataclasses.dataclass(frozen=True)
class WatchEvent:
    """``type`` is ADDED, MODIFIED, DELETED; bookmarks and errors are handled inside."""

    type: str
    object: dict[str, JSON]
    problem: str | None = None  # set when the object could not be read whole


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

    #: Headers of every request: set by :meth:`impersonating`.
    _acting_as: Mapping[str, str] = {}

    def impersonating(self, user: str) -> Client:
        """This client acting as ``user`` (``Impersonate-User``), on the same
        connections: the API server authorises each request as ``user``, and
        the client's own credentials need the ``impersonate`` verb on it.
        Never close it: it shares this client's connections."""
        acting = copy.copy(self)
        acting._acting_as = {"Impersonate-User": user}
        return acting

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
        headers = {"Content-Type": content_type} if content is not None else {}
        response = await self._http.request(
            method, path, content=content, params=dict(params or {}), headers={**headers, **self._acting_as}
        )
        if response.status_code >= 400:
            raise _error(response.status_code, _json_or_text(response.content))
        if not response.content:
            return None
        return _read(response.content)

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
        """The list object: ``items`` and ``metadata.resourceVersion`` (to watch from).
        Items that cannot be read are left out (see :meth:`list_items`)."""
        listing, _ = await self.list_items(
            resource, namespace, label_selector=label_selector, field_selector=field_selector
        )
        return listing

    async def list_items(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[dict[str, JSON], Sequence[Unreadable]]:
        """The list object with the items that could be read, and those that could not."""
        params = _selectors(label_selector, field_selector)
        response = await self._http.get(resource.path(namespace), params=params, headers=self._acting_as)
        if response.status_code >= 400:
            raise _error(response.status_code, _json_or_text(response.content))
        return read_list(response.content)

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

    async def logs(
        self,
        namespace: str,
        pod: str,
        container: str | None = None,
        *,
        limit_bytes: int | None = None,
        tail_lines: int | None = None,
    ) -> str:
        """A pod's log; with ``limit_bytes`` the server sends at most that many
        bytes, and no more is read from the stream whatever it sends."""
        params: dict[str, str] = {"container": container} if container else {}
        if limit_bytes is not None:
            params["limitBytes"] = str(limit_bytes)
        if tail_lines is not None:
            params["tailLines"] = str(tail_lines)
        async with self._http.stream(
            "GET", PODS.path(namespace, pod, "log"), params=params, headers=self._acting_as
        ) as response:
            if response.status_code >= 400:
                raise _error(response.status_code, _json_or_text(await response.aread()))
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if limit_bytes is not None and size >= limit_bytes:
                    break
        data = b"".join(chunks)
        if limit_bytes is not None:
            data = data[:limit_bytes]
        return data.decode("utf-8", errors="replace")

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
        yielded too (type BOOKMARK) so the caller can move its version on. An
        object that cannot be read whole comes with its ``problem`` set."""
        params = _selectors(label_selector, field_selector)
        params.update(watch="true", allowWatchBookmarks="true", timeoutSeconds=str(timeout_seconds))
        if resource_version:
            params["resourceVersion"] = resource_version
        timeout = httpx2.Timeout(30.0, read=timeout_seconds + 30.0)
        async with self._http.stream(
            "GET", resource.path(namespace), params=params, timeout=timeout, headers=self._acting_as
        ) as response:
            if response.status_code >= 400:
                raise _error(response.status_code, _json_or_text(await response.aread()))
            async for line in response.aiter_lines():
                if not line:
                    continue
                kind, obj, problem = read_event(line)
                if kind == "ERROR":
                    raise _error(int(obj.get("code") or 500), obj)
                yield WatchEvent(type=kind, object=obj, problem=problem)

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
                listing, unreadable = await self.list_items(
                    resource, namespace, label_selector=label_selector, field_selector=field_selector
                )
                version = (listing.get("metadata") or {}).get("resourceVersion")
                items = listing.get("items") or []
                kind = resource_kind(listing)
                for item in items:
                    item.setdefault("kind", kind)
                    item.setdefault("apiVersion", resource.api_version)
                    yield WatchEvent("ADDED", item)
                for bad in unreadable:
                    bad.object.setdefault("kind", kind)
                    bad.object.setdefault("apiVersion", resource.api_version)
                    yield WatchEvent("ADDED", bad.object, problem=bad.problem)
                yield WatchEvent("SYNCED", {"items": [*items, *(bad.object for bad in unreadable)]})
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


def _read(content: bytes) -> JSON:
    """An answer; an object that cannot be read whole raises UnreadableAnswer."""
    found = read_object(content.decode("utf-8", errors="replace"))
    if isinstance(found, Unreadable):
        raise UnreadableAnswer(found.problem, found.object)
    return found


def _json_or_text(content: bytes) -> dict[str, JSON]:
    with contextlib.suppress(ValueError):
        data = json.loads(content)
        if isinstance(data, dict):
            return data
    return {"message": content.decode(errors="replace")[:2000]}
