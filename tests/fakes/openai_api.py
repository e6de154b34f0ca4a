"""An OpenAI-compatible chat completions server with deterministic answers.

``POST /v1/chat/completions`` answers ``"Answer: <last user message>"``; in
JSON mode (``response_format: {"type": "json_object"}``) it answers
``{"answer": <last user message>, "words": <its word count>}``. ``replies``
maps a substring of the last user message to an exact answer, which is how a
test gets a non-JSON answer in JSON mode. Tokens are counted as words.

With ``api_key`` set, requests without ``Authorization: Bearer <api_key>``
get 401, as OpenAI answers them (with ``quote_key``, quoting the key they
presented). Every request is recorded with its headers,
so a test can check that the key arrived (and then that it appears nowhere
else).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any

from tests.fakes.server import FakeServer, Reply, Request


def words(text: str) -> int:
    return len(text.split())


class FakeOpenAI(FakeServer):
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        replies: Mapping[str, str] | None = None,
        quote_key: bool = False,
        advertise: str | None = None,
    ) -> None:
        super().__init__(host, port, advertise=advertise)
        self.api_key = api_key
        self.replies = dict(replies or {})
        self.quote_key = quote_key
        self._failures: list[Reply] = []
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as ``base_url`` (a step's ``baseURL``)."""
        return f"{self.url}/v1"

    def fail_next(self, times: int, status: int = 503) -> None:
        with self.lock:
            self._failures.extend(
                Reply(status, {"error": {"message": "overloaded", "type": "server_error"}})
                for _ in range(times)
            )

    def completions(self) -> list[dict[str, Any]]:
        """The bodies of the chat completion requests received."""
        with self.lock:
            return [r.json() for r in self.requests if r.path.startswith("/v1/chat/completions")]

    def handle(self, request: Request) -> Reply:
        presented = request.headers.get("authorization", "").removeprefix("Bearer ")
        if self.api_key is not None and presented != self.api_key:
            # Some endpoints quote the refused key in full; quote_key plays one of them.
            quoted = f": {presented}" if self.quote_key else ""
            return Reply(
                401,
                {
                    "error": {
                        "message": f"Incorrect API key provided{quoted}.",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
            )
        with self.lock:
            if self._failures:
                return self._failures.pop(0)
        if request.method != "POST" or request.path.split("?")[0] != "/v1/chat/completions":
            return Reply(404, {"error": {"message": f"no route {request.method} {request.path}"}})
        try:
            body = request.json()
            model = body["model"]
            messages = body["messages"]
        except (ValueError, KeyError, TypeError) as exc:
            return Reply(400, {"error": {"message": f"bad request: {exc}", "type": "invalid_request_error"}})
        json_mode = (body.get("response_format") or {}).get("type") == "json_object"
        content = self.answer(messages, json_mode=json_mode)
        prompt_tokens = sum(words(str(m.get("content", ""))) for m in messages)
        completion_tokens = words(content)
        with self.lock:
            number = next(self._ids)
        return Reply(
            200,
            {
                "id": f"chatcmpl-{number}",
                "object": "chat.completion",
                "created": 1700000000 + number,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
        )

    def answer(self, messages: list[dict[str, Any]], *, json_mode: bool) -> str:
        last = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
        for needle, reply in self.replies.items():
            if needle in last:
                return reply
        if json_mode:
            return json.dumps({"answer": last, "words": words(last)})
        return f"Answer: {last}"
