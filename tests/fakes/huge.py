"""A server whose every answer is a huge body, made as it is sent (never held).

``HugeBody(size=300 * MiB)`` answers 200 with ``size`` bytes of JSON-ish
filler, chunked (no Content-Length) unless ``declare`` is set; with ``gzip``,
those bytes are sent gzip-compressed, so a small transfer unfolds into the
whole size. ``sent`` counts the bytes that went out before the client hung up:
a client that stops reading at its cap leaves it far below ``size``.
"""

from __future__ import annotations

import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

MiB = 1024 * 1024
_PIECE = b"x" * MiB


class HugeBody:
    def __init__(
        self, size: int, *, declare: bool = False, gzip: bool = False, host: str = "127.0.0.1"
    ) -> None:
        self.size = size
        self.declare = declare
        self.gzip = gzip
        self.host = host
        self.port = 0
        self.sent = 0
        self.requests = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _pieces(self) -> Any:
        if not self.gzip:
            for start in range(0, self.size, MiB):
                yield _PIECE[: min(MiB, self.size - start)]
            return
        packer = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)
        for start in range(0, self.size, MiB):
            packed = packer.compress(_PIECE[: min(MiB, self.size - start)])
            if packed:
                yield packed
        yield packer.flush()

    def start(self) -> Self:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self._answer()

            def _answer(self) -> None:
                with fake._lock:
                    fake.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if fake.gzip:
                    self.send_header("Content-Encoding", "gzip")
                if fake.declare and not fake.gzip:
                    self.send_header("Content-Length", str(fake.size))
                else:
                    self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()
                chunked = not (fake.declare and not fake.gzip)
                try:
                    for piece in fake._pieces():
                        frame = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
                        self.wfile.write(frame)
                        with fake._lock:
                            fake.sent += len(frame)
                    if chunked:
                        self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading: what this server is for
                self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
