"""Every example in examples/ runs on the cluster, in real pods of the runner
image, and ends as tests/support/examples.py (and examples/README.md) say.

http and llm steps reach fake GitHub and OpenAI servers that this test runs
on the host address pods can reach; the llm key comes from a Secret, and is
checked to appear nowhere a user or the operator's log would show it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from kwf.k8s.api import EVENTS, KWF_JOBS, SECRETS, WORKFLOWS, Client
from kwf.schedule.scheduler import CONDITION, LABEL_WORKFLOW
from tests.fakes import FakeGitHub, FakeOpenAI
from tests.support.examples import API_KEY, EXAMPLES, Example
from tests.support.operator_process import OperatorProcess
from tests.support.runs import finished, step_status, wait_for

JSON = Any


@pytest.fixture(scope="module")
def servers(host_address: str) -> Iterator[dict[str, str]]:
    with contextlib.ExitStack() as stack:
        github = stack.enter_context(FakeGitHub(host=host_address))
        openai = stack.enter_context(FakeOpenAI(host=host_address, api_key=API_KEY))
        yield {"github": github.url, "openai": openai.base_url}


@pytest.fixture
def operator_args(runner_image: str) -> list[str]:
    return ["--runner-image", runner_image]


def documents(example: Example, servers: dict[str, str]) -> list[dict[str, JSON]]:
    """The example's objects, with the URLs it writes out pointed at the fakes."""
    return [doc for doc in yaml.safe_load_all(example.text(servers)) if doc]


async def apply(api: Client, namespace: str, docs: list[dict[str, JSON]]) -> str:
    """Create the Workflows, then the Job; the name of the Job (or the Workflow)."""
    docs = sorted(docs, key=lambda doc: doc["kind"] != "Workflow")
    for doc in docs:
        await api.create(WORKFLOWS if doc["kind"] == "Workflow" else KWF_JOBS, doc, namespace)
    return str(docs[-1]["metadata"]["name"])


async def scheduled_run(api: Client, namespace: str, workflow: str) -> str:
    """Start a schedule's run now: wait until the operator has registered the
    schedule, then say its last run was two days ago, so the latest due time
    was missed and starts at once (no waiting on the wall clock's hour)."""

    def registered(wf: dict[str, JSON]) -> bool:
        conditions = (wf.get("status") or {}).get("conditions") or []
        return any(c["type"] == CONDITION and c["reason"] == "Waiting" for c in conditions)

    wf = await wait_for(
        lambda: api.get(WORKFLOWS, workflow, namespace), registered, what="schedule registered"
    )
    [condition] = [c for c in wf["status"]["conditions"] if c["type"] == CONDITION]
    assert condition["status"] == "True" and condition["message"].startswith("next run at ")
    last = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await api.patch(
        WORKFLOWS, workflow, {"status": {"lastScheduleTime": last}}, namespace, subresource="status"
    )
    listing = await wait_for(
        lambda: api.list(KWF_JOBS, namespace, label_selector=f"{LABEL_WORKFLOW}={workflow}"),
        lambda found: len(found["items"]) == 1,
        what="the scheduled run",
    )
    return str(listing["items"][0]["metadata"]["name"])


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.file)
async def test_example_runs_on_the_cluster_as_documented(
    api: Client,
    namespace: str,
    operator: OperatorProcess,
    servers: dict[str, str],
    example: Example,
) -> None:
    if "openai" in example.servers:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "openai"},
            "stringData": {"api-key": API_KEY},
        }
        await api.create(SECRETS, secret, namespace)
    docs = documents(example, servers)
    name = await apply(api, namespace, docs)
    if all(doc["kind"] == "Workflow" for doc in docs):
        name = await scheduled_run(api, namespace, name)

    run = await finished(api, namespace, name, within=240)
    status = run["status"]
    assert status["phase"] == example.phase, status
    assert {step["name"] for step in status["steps"]} == set(example.steps)
    for step, phase in example.steps.items():
        assert step_status(run, step)["phase"] == phase, step_status(run, step)
    for step, attempts in example.attempts.items():
        assert step_status(run, step)["attempts"] == attempts
    state = status.get("sharedState") or {}
    assert {key: state.get(key) for key in example.state} == dict(example.state)
    for model in example.usage_models:
        assert status["usage"][model]["totalTokens"] > 0
    assert status["progress"] == f"{len(example.steps)}/{len(example.steps)}"

    if "openai" in example.servers:
        events = await api.list(EVENTS, namespace)
        seen = [str(run), str(events), operator.log()]
        assert not any(API_KEY in text for text in seen), "the API key leaked"
