"""The Secrets of inline steps, read as the run's namespace allows.

The operator holds no ``secrets`` permission of its own. It reads a Secret for
a run in namespace NS as the ServiceAccount ``NS/<inline service account>``
(``kwf-inline`` unless ``--inline-service-account`` says otherwise), through
impersonation: the operator may impersonate that one name and nothing else,
and a namespace's owners choose, with an ordinary Role and RoleBinding in
their namespace, which Secrets that ServiceAccount may ``get``. A run can thus
read only what its own namespace granted; a refusal fails the step with a
message saying what to grant, never with the API server's own text.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Awaitable, Callable, Mapping

from kwf.k8s.api import SECRETS, ApiError, Client, NotFound
from kwf.steps import StepError

Fetch = Callable[[str, str], Awaitable[Mapping[str, bytes]]]

DEFAULT_INLINE_SERVICE_ACCOUNT = "kwf-inline"
#: How long a Secret's keys are reused: a rotated key (or a revoked grant) takes effect this late at most.
SECRET_TTL_SECONDS = 30.0

#: Secrets kept at most before the expired ones are dropped.
MAX_CACHED = 1024

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


class SecretForbidden(Exception):
    """The reader may not get that Secret."""

    def __init__(self, reader: str) -> None:
        super().__init__(reader)
        self.reader = reader


def service_account_user(namespace: str, service_account: str) -> str:
    return f"system:serviceaccount:{namespace}:{service_account}"


def check_service_account_name(name: str) -> str:
    """``name`` if it can name a ServiceAccount; ValueError naming the flag otherwise."""
    if len(name) > 253 or not _SUBDOMAIN.match(name):
        raise ValueError(
            f"--inline-service-account: {name!r} is not a ServiceAccount name (a DNS-1123 subdomain)"
        )
    return name


def secret_fetcher(api: Client, service_account: str = DEFAULT_INLINE_SERVICE_ACCOUNT) -> Fetch:
    """Reads a Secret of a namespace as that namespace's inline ServiceAccount."""

    async def fetch(namespace: str, name: str) -> Mapping[str, bytes]:
        user = service_account_user(namespace, service_account)
        try:
            secret = await api.impersonating(user).get(SECRETS, name, namespace)
        except ApiError as error:
            if error.status in (401, 403):
                raise SecretForbidden(f"ServiceAccount {service_account}") from None
            raise
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        data.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
        return data

    return fetch


class SecretCache:
    """Secret data by (namespace, name), kept ``ttl`` seconds. Values are never logged."""

    def __init__(
        self, fetch: Fetch, *, ttl: float = SECRET_TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ):
        self._fetch = fetch
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[float, Mapping[str, bytes]]] = {}

    async def value(self, namespace: str, name: str, key: str, *, field: str) -> str:
        """The key's value; StepError naming ``field`` when the Secret or key is
        missing, malformed, or not readable for this namespace."""
        if len(name) > 253 or not _SUBDOMAIN.match(name):
            raise StepError(f"{field}.name: {name!r} is not a Secret name (a DNS-1123 subdomain)")
        if len(key) > 253 or not _KEY.match(key):
            raise StepError(f"{field}.key: {key!r} is not a Secret key name")
        entry = self._entries.get((namespace, name))
        if entry is None or entry[0] <= self._clock():
            entry = (self._clock() + self._ttl, await self._read(namespace, name, field))
            self._entries[(namespace, name)] = entry
            if len(self._entries) > MAX_CACHED:
                now = self._clock()
                self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
        raw = entry[1].get(key)
        if raw is None:
            raise StepError(f"{field}: Secret {name!r} has no key {key!r}")
        return raw.decode()

    async def _read(self, namespace: str, name: str, field: str) -> Mapping[str, bytes]:
        try:
            return await self._fetch(namespace, name)
        except NotFound:
            raise StepError(f"{field}: Secret {name!r} not found in namespace {namespace}") from None
        except SecretForbidden as denied:
            raise StepError(
                f"{field}: the operator may not read Secret {name!r} in namespace {namespace} "
                f"as {denied.reader}: grant it get on that Secret (see docs/security.md)"
            ) from None
        except ApiError as error:  # the API server's text may quote what it was sent: not shown
            raise StepError(
                f"{field}: reading Secret {name!r} in namespace {namespace} failed: "
                f"the API server answered {error.status} {error.reason}"
            ) from None
