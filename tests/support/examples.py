"""Every example in examples/ and the result its comments and examples/README.md
promise. Each tier that runs the examples (locally, on a cluster) checks
against this table, so the documentation and the tests cannot drift apart.

``servers`` names the test servers an example needs (tests/fakes);
``origins`` says which server stands in for which address the example writes
out (a template may not fill a URL's scheme and host, so the text is changed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.fakes.github import REPOS

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"

#: The API key the llm examples are run with; the fake server demands it.
API_KEY = "sk-test-not-a-real-key"
#: Where `kwf run` finds the key of Secret `openai`, key `api-key`.
API_KEY_ENV = "KWF_SECRET_OPENAI_API_KEY"

_KOPF = REPOS["nolar/kopf"]
GITHUB = "https://api.github.com"
OPENAI = "https://api.openai.com/v1"


@dataclasses.dataclass(frozen=True)
class Example:
    file: str
    phase: str
    state: Mapping[str, Any]  # a subset of status.sharedState
    steps: Mapping[str, str]  # step name -> phase
    attempts: Mapping[str, int] = dataclasses.field(default_factory=dict)
    servers: tuple[str, ...] = ()  # "github", "openai"
    origins: Mapping[str, str] = dataclasses.field(default_factory=dict)  # written-out URL -> server
    usage_models: tuple[str, ...] = ()  # models with token usage recorded

    @property
    def path(self) -> Path:
        return EXAMPLES_DIR / self.file

    def text(self, servers: Mapping[str, str]) -> str:
        """The example's YAML, its written-out URLs pointed at the test servers."""
        text = self.path.read_text()
        for origin, server in self.origins.items():
            assert origin in text, f"{self.file} no longer names {origin}"
            text = text.replace(origin, servers[server])
        return text


EXAMPLES: tuple[Example, ...] = (
    Example(
        "counter.yaml",
        "Succeeded",
        state={"counter": 6},
        steps={"increment": "Succeeded"},
    ),
    Example(
        "diamond.yaml",
        "Succeeded",
        state={"numbers": [1, 2, 3, 4], "sum": 10, "max": 4, "report": "sum 10, max 4"},
        steps={"split": "Succeeded", "total": "Succeeded", "largest": "Succeeded", "report": "Succeeded"},
    ),
    Example(
        "retry.yaml",
        "Succeeded",
        state={"succeededOn": 3},
        steps={"flaky": "Succeeded"},
        attempts={"flaky": 3},
    ),
    Example(
        "fallback.yaml",
        "Succeeded",
        state={"answer": "unknown"},
        steps={"ask-oracle": "Recovered", "default-answer": "Succeeded", "announce": "Succeeded"},
    ),
    Example(
        "when.yaml",
        "Succeeded",
        state={"total": 30, "notified": True},
        steps={"add-up": "Succeeded", "refund": "Skipped", "notify": "Succeeded"},
    ),
    Example(
        "http.yaml",
        "Succeeded",
        state={"stars": _KOPF["stargazers_count"]},
        steps={"stars": "Succeeded", "report": "Succeeded"},
        servers=("github",),
        origins={GITHUB: "github"},
    ),
    Example(
        "llm.yaml",
        "Succeeded",
        state={"haiku": "Answer: Write a haiku about Kubernetes operators."},
        steps={"haiku": "Succeeded"},
        servers=("openai",),
        origins={OPENAI: "openai"},
        usage_models=("gpt-4o-mini",),
    ),
    Example(
        "github-summary.yaml",
        "Succeeded",
        state={
            "description": _KOPF["description"],
            "summary": f"Answer: Summarise in one line: {_KOPF['description']}",
            "report": f"nolar/kopf: Answer: Summarise in one line: {_KOPF['description']}",
        },
        steps={"fetch": "Succeeded", "summarize": "Succeeded", "format": "Succeeded"},
        servers=("github", "openai"),
        origins={GITHUB: "github", OPENAI: "openai"},
        usage_models=("gpt-4o-mini",),
    ),
    Example(
        "container.yaml",
        "Succeeded",
        state={"shout": "HELLO FROM A CONTAINER"},
        steps={"shout": "Succeeded"},
    ),
    Example(
        "dynamic.yaml",
        "Succeeded",
        state={"squares": {"1": 1, "2": 4, "3": 9}, "total": 14},
        steps={
            "plan": "Succeeded",
            "square-1": "Succeeded",
            "square-2": "Succeeded",
            "square-3": "Succeeded",
            "collect": "Succeeded",
        },
    ),
    Example(
        "workflow-ref.yaml",
        "Succeeded",
        state={"greeting": "hello, kwf"},
        steps={"greet": "Succeeded"},
    ),
    Example(
        "schedule.yaml",
        "Succeeded",
        state={"checked": "nightly"},
        steps={"check": "Succeeded"},
    ),
)

BY_FILE = {example.file: example for example in EXAMPLES}
