"""A server that answers each path with scripted replies, in order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from tests.fakes.server import FakeServer, Reply, Request

Script = Reply | Sequence[Reply]


class ScriptedServer(FakeServer):
    """``routes`` maps ``"/path"`` (any method) or ``"POST /path"`` to a reply or a
    list of replies given one per request; the last one repeats. Other paths: 404.
    The query string is not part of the path matched."""

    def __init__(
        self,
        routes: Mapping[str, Script] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        advertise: str | None = None,
    ) -> None:
        super().__init__(host, port, advertise=advertise)
        self._routes: dict[str, list[Reply]] = {}
        for route, replies in (routes or {}).items():
            self.script(route, replies)

    def script(self, route: str, replies: Script) -> None:
        with self.lock:
            self._routes[route] = [replies] if isinstance(replies, Reply) else list(replies)

    def handle(self, request: Request) -> Reply:
        path = urlsplit(request.path).path
        with self.lock:
            replies = self._routes.get(f"{request.method} {path}") or self._routes.get(path)
            if not replies:
                return Reply(404, {"error": f"nothing scripted for {request.method} {path}"})
            return replies.pop(0) if len(replies) > 1 else replies[0]

    def hits(self, path: str) -> int:
        with self.lock:
            return sum(1 for r in self.requests if urlsplit(r.path).path == path)
