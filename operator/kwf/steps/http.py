"""HTTP steps with httpx2: one request, retried on transient failures.

The output is ``{"status": int, "headers": {lower-case name: value}, "body":
JSON or text}``, or the part of it that ``select`` names (``body.items.0``).
Transient failures (no connection, a timeout, 429, 502, 503, 504) are
retried up to ``retries`` times with a short backoff, honouring a server's
``Retry-After`` up to a cap. Each host has a circuit breaker: after
``threshold`` transient failures in a row it opens for ``cooldown`` seconds,
and requests to that host fail at once instead of piling up on it. Breakers
live in the process, so an inline executor shares them across steps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2

from kwf.api import HttpStep
from kwf.engine.types import Result
from kwf.steps.contract import StepError

TRANSIENT_STATUS = frozenset({429, 502, 503, 504})
#: Characters of an unexpected response body quoted in a failure message.
BODY_QUOTE = 300
#: Characters of a URL quoted in a failure message.
URL_QUOTE = 200

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Waits between in-step retries: ``first * 2**(n-1)`` capped by ``longest``;
    a ``Retry-After`` is honoured up to ``retry_after_cap``."""

    first: float = 0.2
    longest: float = 2.0
    retry_after_cap: float = 10.0

    def wait(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_cap)
        return min(self.first * 2.0 ** (retry - 1), self.longest)


class CircuitBreakers:
    """Per-host breakers: closed, open for ``cooldown`` seconds after
    ``threshold`` failures in a row, then half-open (one trial request)."""

    def __init__(self, *, threshold: int = 5, cooldown: float = 30.0, clock: Clock = time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self._failures: dict[str, int] = {}
        self._open_until: dict[str, float] = {}

    def check(self, host: str) -> None:
        """Raise StepError while the host's breaker is open."""
        until = self._open_until.get(host)
        if until is None:
            return
        left = until - self.clock()
        if left > 0:
            raise StepError(
                f"circuit open for {host} after {self.threshold} failures in a row; "
                f"trying again in {left:.1f} s"
            )
        # Half-open: let this request through; one more failure reopens at once.
        del self._open_until[host]
        self._failures[host] = self.threshold - 1

    def succeeded(self, host: str) -> None:
        self._failures.pop(host, None)
        self._open_until.pop(host, None)

    def failed(self, host: str) -> None:
        count = self._failures.get(host, 0) + 1
        self._failures[host] = count
        if count >= self.threshold:
            self._open_until[host] = self.clock() + self.cooldown

    def is_open(self, host: str) -> bool:
        until = self._open_until.get(host)
        return until is not None and until > self.clock()


#: The breakers of this process, shared by every HTTP step it runs.
BREAKERS = CircuitBreakers()


async def run_http(
    spec: HttpStep,
    *,
    client: httpx2.AsyncClient | None = None,
    breakers: CircuitBreakers | None = None,
    backoff: Backoff = Backoff(),
    sleep: Sleep = asyncio.sleep,
) -> Result:
    breakers = BREAKERS if breakers is None else breakers
    try:
        url = httpx2.URL(spec.url)
    except httpx2.InvalidURL as exc:
        raise StepError(f"http.url is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise StepError(f"http.url must be an http:// or https:// URL, not {spec.url!r}")
    host = f"{url.host}:{url.port}" if url.port else url.host
    if client is None:
        async with httpx2.AsyncClient(verify=_tls()) as own:
            response = await _send(spec, own, host, breakers, backoff, sleep)
    else:
        response = await _send(spec, client, host, breakers, backoff, sleep)
    return Result(output=_output(spec, response))


async def _send(
    spec: HttpStep,
    client: httpx2.AsyncClient,
    host: str,
    breakers: CircuitBreakers,
    backoff: Backoff,
    sleep: Sleep,
) -> httpx2.Response:
    request = client.build_request(
        spec.method,
        spec.url,
        headers=spec.headers,
        json=spec.body if spec.body is not None else None,
        timeout=spec.timeout_seconds,
    )
    retry = 0
    while True:
        breakers.check(host)
        problem: str
        retry_after: float | None = None
        try:
            response = await client.send(request)
            await response.aread()
        except (httpx2.TransportError, httpx2.TimeoutException) as exc:
            problem = f"{spec.method} {_short(spec.url)} failed: {type(exc).__name__}: {exc}"
        else:
            if response.status_code not in TRANSIENT_STATUS:
                breakers.succeeded(host)
                return response
            problem = f"{spec.method} {_short(spec.url)} answered {response.status_code}"
            retry_after = _retry_after(response)
        breakers.failed(host)
        retry += 1
        if retry > spec.retries:
            tries = f" after {spec.retries + 1} tries" if spec.retries else ""
            raise StepError(problem + tries)
        await sleep(backoff.wait(retry, retry_after))


@functools.cache
def _tls() -> ssl.SSLContext:
    # Loading the CA bundle takes a noticeable fraction of a second: once per process.
    return httpx2.create_ssl_context()


def _short(url: str) -> str:
    return url if len(url) <= URL_QUOTE else url[:URL_QUOTE] + "..."


def _retry_after(response: httpx2.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _output(spec: HttpStep, response: httpx2.Response) -> Any:
    body = _body(response)
    if response.status_code not in spec.expected_status:
        quote = body if isinstance(body, str) else json.dumps(body)
        if len(quote) > BODY_QUOTE:
            quote = quote[:BODY_QUOTE] + "..."
        raise StepError(
            f"{spec.method} {_short(spec.url)} answered {response.status_code}, "
            f"expected one of {spec.expected_status}: {quote}"
        )
    whole = {"status": response.status_code, "headers": dict(response.headers), "body": body}
    return whole if spec.select is None else select(whole, spec.select)


def _body(response: httpx2.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text


def select(data: Any, path: str) -> Any:
    """Follow a dotted path (keys, or list indices as numbers) into ``data``."""
    here = data
    walked: list[str] = []
    for part in path.split("."):
        where = ".".join(walked) or "the response"
        if isinstance(here, dict):
            if part not in here:
                raise StepError(f"select {path!r}: no {part!r} in {where}")
            here = here[part]
        elif isinstance(here, list):
            if not part.isdigit() or int(part) >= len(here):
                raise StepError(f"select {path!r}: {where} is a list of {len(here)}, no item {part!r}")
            here = here[int(part)]
        else:
            raise StepError(f"select {path!r}: {where} is {type(here).__name__}, not an object")
        walked.append(part)
    return here
