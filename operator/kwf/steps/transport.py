"""The HTTP client of http and llm steps: bodies read with a cap, and (in the
operator) connections only to addresses that a policy allows.

A response body is never held whole: it is counted as it arrives, after
decoding, and the request fails with :class:`ResponseTooLarge` once it passes
the cap. gzip and deflate are decoded here, in pieces of bounded size, so a
small compressed body cannot unfold into gigabytes either.

With a ``check``, every connection first resolves its host, asks the check
about every address it resolved to, and then connects to an address that was
checked, never to the name again: an answer that changes between the check
and the connection (DNS rebinding) cannot slip through. The check runs again
for each connection, so each hop of a redirect is checked too. TLS still
verifies the host's name (SNI and the certificate use the name, not the
address).
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import ipaddress
import socket
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, cast

import httpcore2
import httpx2
from httpcore2._backends.auto import AutoBackend
from httpcore2._backends.base import AsyncNetworkBackend, AsyncNetworkStream

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Says why an address must not be reached (the address's class), or None.
AddressCheck = Callable[[str, IPAddress], str | None]
#: The addresses a host name resolves to (the system's resolver by default).
Resolve = Callable[[str, int], Awaitable[list[IPAddress]]]

#: The default cap of a response body, in bytes (after decoding).
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
#: Decoded bytes produced from one piece of a compressed body at most.
_PIECE = 64 * 1024


class ResponseTooLarge(Exception):
    """The response body passed the cap; the message names the cap."""

    def __init__(self, cap: int, size: int | None = None) -> None:
        said = f" (it declares {size} bytes)" if size is not None else ""
        super().__init__(f"the response body is over the cap of {cap} bytes{said}; it was not read further")
        self.cap = cap


class AddressRefused(Exception):
    """A policy refused the address a host resolved to; nothing was sent to it."""

    def __init__(self, host: str, address: IPAddress, why: str) -> None:
        where = f"{address} is" if as_address(host) == address else f"{host} resolves to {address},"
        super().__init__(
            f"{where} {why}: inline steps may not reach it unless the operator allows it "
            "(--inline-allow-cidr, --inline-allow-host)"
        )
        self.host = host
        self.address = address
        self.why = why


def as_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Keeps no cookie a server sets: one step's session must never reach another's request."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


class GuardedBackend(AsyncNetworkBackend):
    """Resolves, checks every address, then connects to a checked address."""

    def __init__(self, check: AddressCheck, resolve: Resolve | None = None) -> None:
        self._check = check
        self._resolve_name = resolve or system_resolve
        self._backend = AutoBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore2's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> AsyncNetworkStream:
        addresses = await self._resolve(host, port, timeout)
        for address in addresses:
            why = self._check(host, address)
            if why is not None:
                raise AddressRefused(host, address, why)
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._backend.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                error = exc
        assert error is not None  # _resolve returns at least one address
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore2's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> AsyncNetworkStream:
        raise httpcore2.ConnectError("inline steps connect over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)

    async def _resolve(self, host: str, port: int, within: float | None) -> list[IPAddress]:
        literal = as_address(host)
        if literal is not None:
            return [literal]
        try:
            async with asyncio.timeout(within):
                found = await self._resolve_name(host, port)
        except TimeoutError:
            raise httpcore2.ConnectTimeout(f"resolving {host} took over {within} s") from None
        except OSError as exc:
            raise httpcore2.ConnectError(f"cannot resolve {host}: {exc}") from None
        if not found:
            raise httpcore2.ConnectError(f"{host} resolves to no address")
        return found


async def system_resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses ``host`` resolves to, in the system's order, off the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


class _CappedStream(httpx2.AsyncByteStream):
    def __init__(self, response: httpx2.Response, cap: int, decoder: Any) -> None:
        self._response = response
        self._cap = cap
        self._decoder = decoder

    async def __aiter__(self) -> AsyncIterator[bytes]:
        total = 0
        async for raw in cast(httpx2.AsyncByteStream, self._response.stream):
            for piece in self._decode(raw):
                total += len(piece)
                if total > self._cap:
                    raise ResponseTooLarge(self._cap)
                yield piece
        if self._decoder is not None:
            rest = self._decoder.flush()
            if total + len(rest) > self._cap:
                raise ResponseTooLarge(self._cap)
            if rest:
                yield rest

    def _decode(self, raw: bytes) -> Iterable[bytes]:
        if self._decoder is None:
            yield raw
            return
        pending = raw
        while pending:
            try:
                piece = self._decoder.decompress(pending, _PIECE)
            except zlib.error as exc:
                raise httpx2.DecodingError(f"the response body does not decode: {exc}") from None
            pending = self._decoder.unconsumed_tail
            yield piece

    async def aclose(self) -> None:
        await self._response.aclose()  # also when the cap stopped the reading half-way


class BoundedTransport(httpx2.AsyncBaseTransport):
    """Caps every response body at ``cap`` bytes; with ``check``, connects only
    to addresses the check allows."""

    def __init__(
        self,
        *,
        cap: int = MAX_RESPONSE_BYTES,
        check: AddressCheck | None = None,
        resolve: Resolve | None = None,
        verify: Any = True,
        limits: httpx2.Limits | None = None,
    ) -> None:
        self.cap = cap
        self._inner = httpx2.AsyncHTTPTransport(
            verify=verify, limits=limits or DEFAULT_LIMITS, trust_env=check is None
        )
        if check is not None:
            # httpx2 has no argument for the network backend; its pool is new
            # and holds no connection yet, so the backend is swapped before any.
            self._inner._pool._network_backend = GuardedBackend(check, resolve)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        declared = response.headers.get("content-length")
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if (
            encoding == "identity"
            and declared is not None
            and declared.isdigit()
            and int(declared) > self.cap
        ):
            await response.aclose()
            raise ResponseTooLarge(self.cap, int(declared))
        if encoding in ("gzip", "x-gzip", "deflate"):
            decoder: Any = zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)  # zlib or gzip framing
        elif encoding == "identity":
            decoder = None
        else:
            await response.aclose()
            raise httpx2.DecodingError(f"the response's Content-Encoding {encoding!r} is not supported")
        headers = [
            (k, v) for k, v in response.headers.multi_items() if decoder is None or k.lower() not in _ENCODED
        ]
        return httpx2.Response(
            status_code=response.status_code,
            headers=headers,
            stream=_CappedStream(response, self.cap, decoder),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


_ENCODED = frozenset({"content-encoding", "content-length"})
#: httpx2's own defaults.
DEFAULT_LIMITS = httpx2.Limits(max_connections=100, max_keepalive_connections=20)


def bounded_client(
    *,
    cap: int = MAX_RESPONSE_BYTES,
    check: AddressCheck | None = None,
    resolve: Resolve | None = None,
    verify: Any = True,
    max_connections: int | None = None,
    follow_redirects: bool = False,
) -> httpx2.AsyncClient:
    """An httpx2 client whose bodies are capped, that keeps no cookies and, with
    ``check``, reaches only allowed addresses (and ignores proxy variables, whose
    proxy would connect on its behalf, unchecked)."""
    limits = httpx2.Limits(max_connections=max_connections) if max_connections else None
    return httpx2.AsyncClient(
        transport=BoundedTransport(cap=cap, check=check, resolve=resolve, verify=verify, limits=limits),
        cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
        headers={"Accept-Encoding": "gzip, deflate"},
        follow_redirects=follow_redirects,
        trust_env=check is None,
    )


def cause(error: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``error`` or the first of its causes and contexts that is a ``kind``."""
    seen: set[int] = set()
    here: BaseException | None = error
    while here is not None and id(here) not in seen:
        if isinstance(here, kind):
            return here
        seen.add(id(here))
        here = here.__cause__ or here.__context__
    return None
