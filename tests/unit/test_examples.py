"""Every example runs locally and ends as examples/README.md says.

http and llm examples talk to the fake GitHub and OpenAI servers over real
sockets on 127.0.0.1, with the real httpx2 and openai clients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from kwf.api import JobPhase
from kwf.local.run import run_local
from tests.fakes import FakeGitHub, FakeOpenAI
from tests.support.examples import API_KEY, API_KEY_ENV, BY_FILE, EXAMPLES, EXAMPLES_DIR, Example

README = EXAMPLES_DIR / "README.md"


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    with contextlib.ExitStack() as stack:
        github = stack.enter_context(FakeGitHub(host="127.0.0.1"))
        openai = stack.enter_context(FakeOpenAI(host="127.0.0.1", api_key=API_KEY))
        yield {"github": github.url, "openai": openai.base_url}


def local_copy(example: Example, servers: dict[str, str], tmp_path: Path) -> Path:
    """The example itself, or a copy talking to the test servers."""
    if not example.origins:
        return example.path
    copy = tmp_path / example.file
    copy.write_text(example.text(servers))
    return copy


def test_the_table_lists_every_example_file() -> None:
    files = {path.name for path in EXAMPLES_DIR.glob("*.yaml")}
    assert files == set(BY_FILE)


def test_the_readme_documents_every_example() -> None:
    text = README.read_text()
    for example in EXAMPLES:
        assert f"({example.file})" in text, f"examples/README.md does not link {example.file}"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.file)
async def test_example_runs_as_documented(example: Example, servers: dict[str, str], tmp_path: Path) -> None:
    status = await run_local(local_copy(example, servers, tmp_path), {}, environ={API_KEY_ENV: API_KEY})
    steps = {step.name: step for step in status.steps}
    assert status.phase is JobPhase(example.phase), status.message
    assert {name: steps[name].phase.value for name in example.steps} == dict(example.steps)
    assert set(steps) == set(example.steps)  # no step more than documented
    for name, attempts in example.attempts.items():
        assert steps[name].attempts == attempts
    state = status.shared_state or {}
    assert {key: state.get(key) for key in example.state} == dict(example.state)
    for model in example.usage_models:
        assert status.usage[model].total_tokens > 0
    assert status.progress == f"{len(steps)}/{len(steps)}"


async def test_the_api_key_never_reaches_the_status(servers: dict[str, str], tmp_path: Path) -> None:
    example = BY_FILE["github-summary.yaml"]
    status = await run_local(local_copy(example, servers, tmp_path), {}, environ={API_KEY_ENV: API_KEY})
    assert status.phase is JobPhase.SUCCEEDED
    assert API_KEY not in status.model_dump_json()
