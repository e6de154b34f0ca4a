"""A GitHub-shaped REST server: ``GET /repos/{owner}/{repo}``.

``fail_next(n)`` makes the next n requests answer 503 (or any status, with
an optional ``Retry-After``) before it answers again, to exercise retries.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from tests.fakes.server import FakeServer, Reply, Request

REPOS: dict[str, dict[str, Any]] = {
    "nolar/kopf": {
        "description": "A Python framework to write Kubernetes operators in just a few lines of code",
        "stargazers_count": 2400,
        "forks_count": 170,
        "language": "Python",
        "topics": ["kubernetes", "operator", "python"],
    },
    "kwf/demo": {
        "description": "A demo repository",
        "stargazers_count": 7,
        "forks_count": 1,
        "language": "Shell",
        "topics": [],
    },
}

_REPO = re.compile(r"^/repos/([^/?]+)/([^/?]+)/?(?:\?.*)?$")


class FakeGitHub(FakeServer):
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        repos: Mapping[str, Mapping[str, Any]] | None = None,
        advertise: str | None = None,
    ) -> None:
        super().__init__(host, port, advertise=advertise)
        self.repos = {name: dict(fields) for name, fields in (REPOS if repos is None else repos).items()}
        self._failures: list[Reply] = []

    def add_repo(self, full_name: str, **fields: Any) -> None:
        with self.lock:
            self.repos[full_name] = fields

    def fail_next(self, times: int, status: int = 503, *, retry_after: float | None = None) -> None:
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        with self.lock:
            self._failures.extend(
                Reply(status, {"message": "Service Unavailable"}, headers) for _ in range(times)
            )

    def handle(self, request: Request) -> Reply:
        with self.lock:
            if self._failures:
                return self._failures.pop(0)
        match = _REPO.match(request.path)
        if request.method not in ("GET", "HEAD") or match is None:
            return Reply(404, {"message": "Not Found"})
        owner, name = match.groups()
        full_name = f"{owner}/{name}"
        with self.lock:
            fields = self.repos.get(full_name)
        if fields is None:
            return Reply(404, {"message": "Not Found"})
        return Reply(
            200,
            {
                "name": name,
                "full_name": full_name,
                "owner": {"login": owner},
                "html_url": f"https://github.com/{full_name}",
                **fields,
            },
            {"ETag": f'"{hashlib.sha1(full_name.encode()).hexdigest()[:16]}"'},
        )
