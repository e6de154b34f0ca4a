"""Real HTTP servers for tests: GitHub-, OpenAI-shaped and scripted ones.

with FakeGitHub(host="127.0.0.1") as gh:
    httpx2.get(f"{gh.url}/repos/nolar/kopf")
"""

from tests.fakes.github import FakeGitHub
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.scripted import ScriptedServer
from tests.fakes.server import FakeServer, Reply, Request

__all__ = ["FakeGitHub", "FakeOpenAI", "FakeServer", "Reply", "Request", "ScriptedServer"]
