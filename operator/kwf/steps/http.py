"""HTTP steps with httpx2: one request, retried on transient failures.

The output is ``{"status": int, "headers": {lower-case name: value}, "body":
JSON or text}``, or the part of it that ``select`` names (``body.items.0``).
Transient failures (no connection, a timeout, 429, 502, 503, 504) are
retried up to ``retries`` times with a short backoff, honouring a server's
``Retry-After`` up to a cap. Each host has a circuit breaker: after
``threshold`` transient failures in a row it opens for ``cooldown`` seconds,
and requests to that host fail at once instead of piling up on it. A step pod
has the process's breakers to itself; the inline executor keeps one set per
namespace, so one tenant's failing host never opens another's circuit.

The body is read as it arrives and never past ``max_body`` bytes: a larger
one fails the step, naming the cap.
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
from kwf.steps.transport import MAX_RESPONSE_BYTES, AddressRefused, ResponseTooLarge, bounded_client

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
    ``threshold`` failures in a row, then half-open (one trial request).
    At most ``hosts`` hosts are remembered: the oldest are forgotten first."""

    def __init__(
        self,
        *,
        threshold: int = 5,
        cooldown: float = 30.0,
        clock: Clock = time.monotonic,
        hosts: int = 10_000,
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self.hosts = hosts
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
        count = self._failures.pop(host, 0) + 1
        self._failures[host] = count  # to the end: the most recent
        while len(self._failures) > self.hosts:
            oldest = next(iter(self._failures))
            del self._failures[oldest]
            self._open_until.pop(oldest, None)
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
    max_body: int = MAX_RESPONSE_BYTES,
) -> Result:
    breakers = BREAKERS if breakers is None else breakers
    try:
        url = httpx2.URL(spec.url)
    except httpx2.InvalidURL as exc:
        raise StepError(f"http.url is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise StepError(f"http.url must be an http:// or https:// URL, not {spec.url!r}")
    host = f"{url.host}:{url.port}" if url.port else url.host
    try:
        if client is None:
            async with bounded_client(cap=max_body, verify=_tls()) as own:
                response, content = await _send(spec, own, host, breakers, backoff, sleep, max_body)
        else:
            response, content = await _send(spec, client, host, breakers, backoff, sleep, max_body)
    except AddressRefused as refused:
        raise StepError(f"http.url: {refused}") from None
    except ResponseTooLarge as large:
        raise StepError(f"http: {spec.method} {_short(spec.url)}: {large}") from None
    return Result(output=_output(spec, response, content))


async def _send(
    spec: HttpStep,
    client: httpx2.AsyncClient,
    host: str,
    breakers: CircuitBreakers,
    backoff: Backoff,
    sleep: Sleep,
    max_body: int,
) -> tuple[httpx2.Response, bytes]:
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
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                content = await _read(response, max_body)
            finally:
                await response.aclose()
        except (httpx2.TransportError, httpx2.TimeoutException) as exc:
            problem = f"{spec.method} {_short(spec.url)} failed: {type(exc).__name__}: {exc}"
        else:
            if response.status_code not in TRANSIENT_STATUS:
                breakers.succeeded(host)
                return response, content
            problem = f"{spec.method} {_short(spec.url)} answered {response.status_code}"
            retry_after = _retry_after(response)
        breakers.failed(host)
        retry += 1
        if retry > spec.retries:
            tries = f" after {spec.retries + 1} tries" if spec.retries else ""
            raise StepError(problem + tries)
        await sleep(backoff.wait(retry, retry_after))


async def _read(response: httpx2.Response, cap: int) -> bytes:
    """The decoded body, read piece by piece and never past ``cap`` bytes."""
    declared = response.headers.get("content-length")
    if (
        declared is not None
        and declared.isdigit()
        and int(declared) > cap
        and "content-encoding" not in response.headers
    ):
        raise ResponseTooLarge(cap, int(declared))
    pieces: list[bytes] = []
    total = 0
    async for piece in response.aiter_bytes():
        total += len(piece)
        if total > cap:
            raise ResponseTooLarge(cap)
        pieces.append(piece)
    return b"".join(pieces)


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


def _output(spec: HttpStep, response: httpx2.Response, content: bytes) -> Any:
    body = _body(response, content)
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


def _body(response: httpx2.Response, content: bytes) -> Any:
    if not content:
        return None
    try:
        return json.loads(content)
    except (ValueError, RecursionError):  # not JSON, or nested past what Python parses
        return content.decode(response.encoding or "utf-8", errors="replace")


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
