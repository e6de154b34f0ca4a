"""A real HTTP server on a real socket, run in a background thread.

Usable from sync and async tests alike (``with`` or ``async with``), bound to
any address: 127.0.0.1 for unit tests, or an address step pods can reach.
Every request is recorded, so tests can check what arrived.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


@dataclasses.dataclass(frozen=True)
class Reply:
    """A response: a JSON value, text or bytes, with a status and headers.
    ``delay`` seconds pass before it is sent (to make a client time out)."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    delay: float = 0.0

    def encode(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if self.body is None:
            data = b""
        elif isinstance(self.body, bytes):
            data = self.body
        elif isinstance(self.body, str):
            data = self.body.encode()
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        else:
            data = json.dumps(self.body).encode()
            headers.setdefault("Content-Type", "application/json")
        return data, headers


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class FakeServer:
    """Subclasses answer in :meth:`handle`; it runs in the server's threads."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, advertise: str | None = None) -> None:
        self.host = host
        self.port = port
        self.advertise = advertise
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, without a trailing slash."""
        host = self.advertise or self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def handle(self, request: Request) -> Reply:
        raise NotImplementedError

    def start(self) -> Self:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_class = type("Server", (ThreadingHTTPServer,), {"address_family": family})
        self._server = server_class((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"fake-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def _serve_forever(self) -> None:
        assert self._server is not None
        self._server.serve_forever(poll_interval=0.02)  # stop() waits for a poll

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def record(self, request: Request) -> None:
        with self.lock:
            self.requests.append(request)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self.start()  # binding and starting a thread take microseconds

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY the
    # second one waits for a delayed ACK (~40 ms a request).
    disable_nagle_algorithm = True

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        self.server_fake.record(request)
        try:
            reply = self.server_fake.handle(request)
        except Exception as exc:  # a broken fake must show up in the test, not hang it
            reply = Reply(500, {"error": f"{type(exc).__name__}: {exc}"})
        if reply.delay:
            time.sleep(reply.delay)
        data, headers = reply.encode()
        self.send_response(reply.status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up waiting: that is its business

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the recorded requests are the log
