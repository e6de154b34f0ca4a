"""Inline steps (executor: inline) run by the operator process itself, against
the real control plane: no pods are needed, and none may be created.

The test servers listen on 127.0.0.1, which inline steps may reach only
because the operator here is started with that address allowed.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import yaml

from kwf.k8s.api import EVENTS, SECRETS, ApiError, Client, Resource, load_kubeconfig
from tests.fakes import FakeGitHub, FakeOpenAI, Reply, ScriptedServer
from tests.fakes.huge import HugeBody, MiB
from tests.support.operator_process import OperatorProcess
from tests.support.runs import (
    apply_run,
    children,
    finished,
    get_run,
    run_body,
    step_status,
    wait_for,
)

KEY = "sk-cluster-inline-8d1f0c"
LOOPBACK = ["--inline-allow-cidr", "127.0.0.1/32"]


@pytest.fixture
def operator_args() -> list[str]:
    return ["--inline", *LOOPBACK]


def http(name: str, url: str, **fields: object) -> dict[str, object]:
    return {"name": name, "executor": "inline", "http": {"url": url, **fields}}


async def test_inline_http_steps_share_state_without_a_pod(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    with FakeGitHub() as github:
        steps = [
            {
                **http(
                    "stars",
                    github.url + "/repos/{{ params.owner }}/{{ params.repo }}",
                    select="body.stargazers_count",
                ),
                "saveAs": "stars",
            },
            {
                **http(
                    "language",
                    github.url + "/repos/{{ params.owner }}/{{ params.repo }}",
                    select="body.language",
                ),
                "dependsOn": ["stars"],
                "when": "state.stars > 1000",
                "saveAs": "language",
            },
        ]
        body = run_body("http", steps, params={"owner": "nolar", "repo": "kopf"})
        await apply_run(api, namespace, body)
        run = await finished(api, namespace, "http")
        assert len(github.requests) == 2
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert run["status"]["sharedState"] == {"stars": 2400, "language": "Python"}
    assert step_status(run, "stars")["attempts"] == 1
    assert await children(api, namespace, "http") == []


async def test_an_inline_llm_step_records_usage_and_never_shows_its_key(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "openai"},
        "stringData": {"api-key": KEY},
    }
    await api.create(SECRETS, secret, namespace)
    await grant_inline_secret(api, namespace, "openai")
    with FakeOpenAI(api_key=KEY, quote_key=True) as openai:
        step = {
            "name": "haiku",
            "executor": "inline",
            "llm": {
                "baseURL": openai.base_url,
                "model": "gpt-test",
                "prompt": "a haiku about {{ params.topic }}",
                "apiKeySecretRef": {"name": "openai", "key": "api-key"},
            },
            "saveAs": "haiku",
        }
        await apply_run(api, namespace, run_body("llm", [step], params={"topic": "operators"}))
        run = await finished(api, namespace, "llm")
        assert [r.headers["authorization"] for r in openai.requests] == [f"Bearer {KEY}"]
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert run["status"]["sharedState"] == {"haiku": "Answer: a haiku about operators"}
    assert run["status"]["usage"]["gpt-test"] == {
        "promptTokens": 4,
        "completionTokens": 5,
        "totalTokens": 9,
    }
    events = await api.list(EVENTS, namespace)
    assert events["items"], "the run's phase changes are posted as Events"
    for where, text in (
        ("status", json.dumps(await get_run(api, namespace, "llm"))),
        ("events", json.dumps(events)),
        ("the operator log", operator.log()),
    ):
        assert KEY not in text, f"the API key is in {where}"


async def test_an_inline_attempt_cut_short_by_a_restart_runs_again_without_spending_a_retry(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    slow_then_quick = [Reply(200, {"n": 1}, delay=60), Reply(200, {"n": 2})]
    with ScriptedServer({"/thing": slow_then_quick}) as server:
        step = {**http("fetch", f"{server.url}/thing", select="body.n"), "saveAs": "n"}
        step["retry"] = {"limit": 0}
        await apply_run(api, namespace, run_body("restart", [step]))
        await wait_for(
            lambda: get_run(api, namespace, "restart"),
            lambda r: step_status(r, "fetch").get("phase") == "Running" and server.hits("/thing") == 1,
            what="the first attempt under way",
        )
        operator.kill()
        operator.start()
        run = await finished(api, namespace, "restart")
        assert server.hits("/thing") == 2
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert run["status"]["sharedState"] == {"n": 2}
    fetch = step_status(run, "fetch")
    assert (fetch["attempts"], fetch["infraRetries"], fetch["lastAttempt"]) == (1, 1, 2)


async def test_a_huge_inline_body_fails_its_step_and_the_operator_stays_small(
    api: Client, namespace: str, operator: OperatorProcess
) -> None:
    assert operator.process is not None
    before = peak_rss_mib(operator.process.pid)
    with HugeBody(300 * MiB) as server:
        step = {**http("big", f"{server.url}/big"), "retry": {"limit": 0}}
        await apply_run(api, namespace, run_body("big", [step]))
        run = await finished(api, namespace, "big")
        sent = server.sent
    after = peak_rss_mib(operator.process.pid)
    assert run["status"]["phase"] == "Failed", run["status"]
    message = step_status(run, "big")["message"]
    assert re.match(
        r"http: GET http://127\.0\.0\.1:\d+/big: the response body is over the cap of \d+ bytes", message
    )
    assert after - before < 64, f"the operator's peak memory grew by {after - before:.0f} MiB"
    assert sent < 100 * MiB


def peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert found is not None
    return int(found.group(1)) / 1024


# ------------------------------------------- Secrets, as each namespace grants

RBAC = "rbac.authorization.k8s.io/v1"
SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts")
ROLES = Resource("rbac.authorization.k8s.io", "v1", "roles")
ROLE_BINDINGS = Resource("rbac.authorization.k8s.io", "v1", "rolebindings")
CLUSTER_ROLES = Resource("rbac.authorization.k8s.io", "v1", "clusterroles", namespaced=False)
CLUSTER_ROLE_BINDINGS = Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings", namespaced=False)

#: What the operator does, and no ``secrets`` rule: it may only impersonate
#: the ServiceAccounts named kwf-inline.
OPERATOR_RULES = [
    {
        "apiGroups": ["workflow.kwf.dev"],
        "resources": ["jobs", "workflows"],
        "verbs": ["get", "list", "watch", "patch", "create", "delete"],
    },
    {
        "apiGroups": ["workflow.kwf.dev"],
        "resources": ["jobs/status", "workflows/status"],
        "verbs": ["get", "patch"],
    },
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    {
        "apiGroups": [""],
        "resources": ["serviceaccounts"],
        "verbs": ["impersonate"],
        "resourceNames": ["kwf-inline"],
    },
]


@pytest.fixture
async def operator_identity(
    api: Client, make_namespace: Callable[[], str], tmp_path: Path
) -> AsyncIterator[Path]:
    """A kubeconfig of a ServiceAccount with the operator's rules and no secrets rule."""
    home = make_namespace()
    name = f"kwf-operator-{home}"[:63]
    await api.create(
        SERVICE_ACCOUNTS,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "kwf-operator"}},
        home,
    )
    await api.create(
        CLUSTER_ROLES,
        {"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": name}, "rules": OPERATOR_RULES},
    )
    binding = {
        "apiVersion": RBAC,
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": "kwf-operator", "namespace": home}],
    }
    await api.create(CLUSTER_ROLE_BINDINGS, binding)
    try:
        answer = await api.request(
            "POST",
            SERVICE_ACCOUNTS.path(home, "kwf-operator", "token"),
            body={
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3600},
            },
        )
        ca = api.config.ca_data
        assert ca is not None
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "c",
                    "cluster": {
                        "server": api.config.server,
                        "certificate-authority-data": base64.b64encode(ca).decode(),
                    },
                }
            ],
            "users": [{"name": "operator", "user": {"token": answer["status"]["token"]}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "operator"}}],
            "current-context": "c",
        }
        path = tmp_path / "operator.kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig))
        path.chmod(0o600)
        yield path
    finally:
        await api.delete(CLUSTER_ROLE_BINDINGS, name)
        await api.delete(CLUSTER_ROLES, name)


async def grant_inline_secret(api: Client, namespace: str, secret: str) -> None:
    """What a namespace's owners do: let kwf-inline get that one Secret."""
    role = {
        "apiVersion": RBAC,
        "kind": "Role",
        "metadata": {"name": "kwf-inline"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret], "verbs": ["get"]}],
    }
    await api.create(ROLES, role, namespace)
    binding = {
        "apiVersion": RBAC,
        "kind": "RoleBinding",
        "metadata": {"name": "kwf-inline"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kwf-inline"},
        "subjects": [{"kind": "ServiceAccount", "name": "kwf-inline", "namespace": namespace}],
    }
    await api.create(ROLE_BINDINGS, binding, namespace)


def llm_step(base_url: str) -> dict[str, object]:
    return {
        "name": "ask",
        "executor": "inline",
        "llm": {
            "baseURL": base_url,
            "model": "m",
            "prompt": "hello",
            "apiKeySecretRef": {"name": "openai", "key": "api-key"},
        },
        "retry": {"limit": 0},
    }


async def test_inline_steps_read_only_the_secrets_their_namespace_granted(
    api: Client, make_namespace: Callable[[], str], operator_identity: Path, tmp_path: Path
) -> None:
    granted, other = make_namespace(), make_namespace()
    other_key = "sk-other-namespace-b41c"
    for namespace, key in ((granted, KEY), (other, other_key)):
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "openai"},
            "stringData": {"api-key": key},
        }
        await api.create(SECRETS, secret, namespace)
    await grant_inline_secret(api, granted, "openai")

    async with Client(load_kubeconfig(operator_identity)) as as_operator:
        with pytest.raises(ApiError) as refused:
            await as_operator.get(SECRETS, "openai", granted)
        assert refused.value.status == 403  # the operator itself reads no Secret

    process = OperatorProcess(
        operator_identity,
        tmp_path / "operator.log",
        namespaces=[granted, other],
        extra_args=["--inline", *LOOPBACK],
    )
    with process, FakeOpenAI(api_key=KEY) as openai:
        await apply_run(api, granted, run_body("ask", [llm_step(openai.base_url)]))
        await apply_run(api, other, run_body("ask", [llm_step(openai.base_url)]))
        allowed = await finished(api, granted, "ask")
        denied = await finished(api, other, "ask")
        log = process.log()
        sent = [r.headers["authorization"] for r in openai.requests]
    assert allowed["status"]["phase"] == "Succeeded", allowed["status"]
    assert sent == [f"Bearer {KEY}"]  # the other namespace's run sent nothing
    assert denied["status"]["phase"] == "Failed", denied["status"]
    assert step_status(denied, "ask")["message"] == (
        f"llm.apiKeySecretRef: the operator may not read Secret 'openai' in namespace {other} "
        "as ServiceAccount kwf-inline: grant it get on that Secret (see docs/security.md)"
    )
    for where, text in (("status", json.dumps(denied)), ("the operator log", log)):
        assert other_key not in text, f"the other namespace's key is in {where}"
