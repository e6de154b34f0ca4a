"""The operator's RBAC, per mode of the chart, asked of the real API server's
authorizer (SubjectAccessReviews) after the chart's RBAC objects are created.

What the operator may do is exactly what its code calls (CALLS below names
each caller); it holds no right to Secrets in any mode, may impersonate only
the inline ServiceAccount and only with inline steps on, and with a list of
watched namespaces it may do nothing anywhere else.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kwf.k8s.api import EVENTS, KWF_JOBS, Client
from tests.fakes import FakeOpenAI
from tests.support.chart import (
    CI_VALUES,
    REPO,
    Manifest,
    chart_namespaces,  # noqa: F401  (a fixture)
    find,
    ok,
    render,
    run,
)
from tests.support.operator_process import OperatorProcess
from tests.support.runs import apply_run, children, finished, get_run, run_body, step_status, wait_for
from tests.support.tools import tool

RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


@pytest.fixture(scope="session")
def helm() -> Path:
    return tool("helm")


@dataclasses.dataclass(frozen=True)
class Ask:
    """One question for the authorizer: ``resource`` is ``plural[.group][/subresource]``."""

    verb: str
    resource: str
    name: str = ""

    def attributes(self, namespace: str) -> dict[str, str]:
        plural_group, _, subresource = self.resource.partition("/")
        plural, _, group = plural_group.partition(".")
        return {
            "namespace": namespace,
            "verb": self.verb,
            "group": group,
            "resource": plural,
            "subresource": subresource,
            "name": self.name,
        }

    def __str__(self) -> str:
        return f"{self.verb} {self.resource}{'/' + self.name if self.name else ''}"


#: Every call the operator makes, and who makes it: the chart must grant these.
CALLS = {
    Ask("list", "jobs.workflow.kwf.dev"): "kopf lists the runs",
    Ask("watch", "jobs.workflow.kwf.dev"): "kopf watches the runs",
    Ask("get", "jobs.workflow.kwf.dev"): "controller.reconcile reads a run again after a conflict",
    Ask("create", "jobs.workflow.kwf.dev"): "schedule.Scheduler starts a scheduled run",
    Ask("delete", "jobs.workflow.kwf.dev"): "ttlSecondsAfterFinished; a schedule's history",
    Ask("patch", "jobs.workflow.kwf.dev/status"): "controller writes a run's status",
    Ask("list", "workflows.workflow.kwf.dev"): "watch.Watches lists Workflows",
    Ask("watch", "workflows.workflow.kwf.dev"): "watch.Watches follows Workflows",
    Ask("get", "workflows.workflow.kwf.dev"): "schedule.Scheduler reads one again after a conflict",
    Ask("patch", "workflows.workflow.kwf.dev/status"): "schedule.Scheduler writes a schedule's status",
    Ask("create", "jobs.batch"): "controller launches a step attempt",
    Ask("get", "jobs.batch"): "controller reads a child Job that exists already",
    Ask("list", "jobs.batch"): "watch.Watches lists child Jobs",
    Ask("watch", "jobs.batch"): "watch.Watches follows child Jobs",
    Ask("delete", "jobs.batch"): "controller stops an attempt",
    Ask("list", "pods"): "watch.Watches lists step pods",
    Ask("watch", "pods"): "watch.Watches follows step pods",
    Ask("get", "pods/log"): "controller reads a large result from the log",
    Ask("create", "events"): "events.Events reports what happened to a run",
}
#: What it never does, though an operator might be expected to.
NEVER = [
    Ask("update", "jobs.workflow.kwf.dev"),
    Ask("patch", "jobs.workflow.kwf.dev"),
    Ask("patch", "workflows.workflow.kwf.dev"),
    Ask("create", "workflows.workflow.kwf.dev"),
    Ask("get", "pods"),
    Ask("create", "pods"),
    Ask("delete", "pods"),
    Ask("create", "pods/exec"),
    Ask("patch", "jobs.batch"),
    Ask("create", "events.events.k8s.io"),
    Ask("create", "deployments.apps"),
    Ask("create", "rolebindings.rbac.authorization.k8s.io"),
    Ask("create", "serviceaccounts/token"),
    Ask("create", "configmaps"),
]
SECRETS = [Ask(verb, "secrets") for verb in ("get", "list", "watch", "create", "update", "patch", "delete")]
INLINE = Ask("impersonate", "serviceaccounts", "kwf-inline")
#: Identities other than the inline one, of every kind impersonation knows.
OTHER_IDENTITIES = [
    Ask("impersonate", "serviceaccounts"),
    Ask("impersonate", "serviceaccounts", "default"),
    Ask("impersonate", "serviceaccounts", "kwf-step"),
    Ask("impersonate", "users"),
    Ask("impersonate", "users", "system:admin"),
    Ask("impersonate", "users", "system:serviceaccount:kube-system:default"),
    Ask("impersonate", "groups", "system:masters"),
    Ask("impersonate", "userextras/scopes"),
    Ask("impersonate", "uids"),
]
CLUSTER_SCOPED = [
    Ask("list", "namespaces"),
    Ask("list", "nodes"),
    Ask("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    Ask("create", "validatingadmissionpolicies.admissionregistration.k8s.io"),
]

#: Granted only when every namespace is watched: kopf follows the CRDs.
CRDS = Ask("list", "customresourcedefinitions.apiextensions.k8s.io")


def json_documents(text: str) -> list[Any]:
    """kubectl prints what it created from a List as one JSON document each."""
    decoder, documents, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        document, end = decoder.raw_decode(text, at + len(text[at:]) - len(text[at:].lstrip()))
        documents.append(document)
        at = end
    return documents


class Authorizer:
    """SubjectAccessReviews of one ServiceAccount, in one request per batch."""

    def __init__(self, kubectl_path: Path, kubeconfig: Path, namespace: str, account: str) -> None:
        self.kubectl: list[str | Path] = [kubectl_path, f"--kubeconfig={kubeconfig}"]
        self.user = f"system:serviceaccount:{namespace}:{account}"
        # What the API server gives a ServiceAccount's token; a review is told.
        self.groups = [
            "system:serviceaccounts",
            f"system:serviceaccounts:{namespace}",
            "system:authenticated",
        ]

    def allowed(self, asks: list[Ask], namespace: str) -> dict[Ask, bool]:
        """``namespace`` "" asks across every namespace (and of cluster-scoped resources)."""
        reviews = [
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": self.user,
                    "groups": self.groups,
                    "resourceAttributes": a.attributes(namespace),
                },
            }
            for a in asks
        ]
        out = ok(
            run(
                *self.kubectl,
                "create",
                "-o",
                "json",
                "-f",
                "-",
                body={"apiVersion": "v1", "kind": "List", "items": reviews},
            )
        )
        items = json_documents(out)
        return {a: bool(item["status"].get("allowed")) for a, item in zip(asks, items, strict=True)}

    def granted(self, asks: list[Ask], namespace: str) -> list[str]:
        return [str(a) for a, yes in self.allowed(asks, namespace).items() if yes]

    def refused(self, asks: list[Ask], namespace: str) -> list[str]:
        return [str(a) for a, yes in self.allowed(asks, namespace).items() if not yes]


@pytest.fixture
def install_rbac(
    helm: Path, kubectl_path: Path, kubeconfig: Path, namespace: str
) -> Iterator[Callable[..., Authorizer]]:
    """Create, for real, the RBAC objects of one rendering (release namespace:
    the test's); delete them after. Returns the operator's authorizer."""
    created: list[Manifest] = []

    def install(*args: str | Path) -> Authorizer:
        release = f"rbac-{namespace}"[:40].rstrip("-")
        manifests = [m for m in render(helm, namespace, *args, release=release) if m["kind"] in RBAC_KINDS]
        body = {"apiVersion": "v1", "kind": "List", "items": manifests}
        ok(run(kubectl_path, f"--kubeconfig={kubeconfig}", "apply", "-f", "-", body=body))
        created.extend(manifests)
        (account,) = [
            m["metadata"]["name"]
            for m in find(manifests, "ServiceAccount")
            if m["metadata"]["name"].startswith(release)
        ]
        return Authorizer(kubectl_path, kubeconfig, namespace, account)

    yield install
    if created:
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "List", "items": created}
        run(kubectl_path, f"--kubeconfig={kubeconfig}", "delete", "--wait=false", "-f", "-", body=body)


Rule = tuple[str, str, str, tuple[str, ...]]  # group, resource, verb, resourceNames


def rules(role: Manifest) -> set[Rule]:
    """(group, resource, verb, resourceNames) of every rule, one per combination."""
    return {
        (group, resource, verb, tuple(rule.get("resourceNames") or ()))
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def needed(*asks: Ask) -> set[Rule]:
    wanted: set[Rule] = set()
    for ask in asks:
        attributes = ask.attributes("")
        resource = "/".join(filter(None, (attributes["resource"], attributes["subresource"])))
        wanted.add((attributes["group"], resource, ask.verb, (ask.name,) if ask.name else ()))
    return wanted


#: kopf follows CRDs while it runs, when it watches every namespace.
CRD_WATCH = {("apiextensions.k8s.io", "customresourcedefinitions", verb, ()) for verb in ("list", "watch")}


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        ((), CRD_WATCH),
        (("--set", "operator.inline.enabled=true"), CRD_WATCH | needed(INLINE)),
        (("-f", CI_VALUES / "namespaced-values.yaml"), set()),
        (("--set", "watchNamespaces={a,b}", "--set", "operator.inline.enabled=true"), needed(INLINE)),
        (("-f", CI_VALUES / "standby-values.yaml"), CRD_WATCH),
    ],
    ids=["cluster scope", "cluster scope, inline", "namespaces", "listed, inline", "standby"],
)
def test_every_mode_renders_exactly_the_operators_calls(
    helm: Path, args: tuple[str | Path, ...], extra: set[Rule]
) -> None:
    """Offline: each (resource, verb) the code uses, nothing more, no Secrets."""
    manifests = render(helm, "kwf-system", *args)
    roles = [
        role
        for role in find(manifests, "ClusterRole") + find(manifests, "Role")
        if not role["metadata"]["name"].endswith("-leader-election")
    ]
    assert roles
    for role in roles:
        granted = rules(role)
        assert granted == needed(*CALLS) | extra, sorted(granted ^ (needed(*CALLS) | extra))
        assert not any(resource == "secrets" for _, resource, _, _ in granted)


@pytest.mark.parametrize(
    "inline",
    [False, True],
    ids=["inline off", "inline on"],
)
def test_cluster_scope_grants_the_calls_no_secrets_and_impersonates_only_kwf_inline(
    install_rbac: Callable[..., Authorizer], namespace: str, inline: bool
) -> None:
    operator = install_rbac("--set", f"operator.inline.enabled={str(inline).lower()}")
    for where in ("default", namespace):
        assert operator.refused(list(CALLS), where) == [], where
        assert operator.granted(NEVER, where) == [], where
        assert operator.granted(OTHER_IDENTITIES, where) == [], where
        assert operator.allowed([INLINE], where)[INLINE] is inline, where
    for where in ("default", "kube-system", namespace, ""):
        assert operator.granted(SECRETS, where) == [], f"secrets in {where or 'every namespace'}"


@pytest.mark.usefixtures("chart_namespaces")
@pytest.mark.parametrize(
    "values",
    [
        ("-f", CI_VALUES / "namespaced-values.yaml", "--set", "operator.inline.enabled=true"),
        # scope=cluster with a list: one ClusterRole, bound in the listed namespaces only.
        (
            "-f",
            CI_VALUES / "namespaced-values.yaml",
            "--set",
            "rbac.scope=cluster",
            "--set",
            "operator.inline.enabled=true",
        ),
    ],
    ids=["namespaces", "cluster scope, listed namespaces"],
)
def test_listed_namespaces_are_the_only_ones_granted(
    install_rbac: Callable[..., Authorizer], helm: Path, namespace: str, values: tuple[str | Path, ...]
) -> None:
    assert find(render(helm, namespace, *values), "ClusterRoleBinding") == []
    operator = install_rbac(*values)
    for where in ("kwf-chart-a", "kwf-chart-b"):
        assert operator.refused([*CALLS, INLINE], where) == [], where
        assert operator.granted(SECRETS + NEVER + OTHER_IDENTITIES, where) == [], where
    # The release namespace is not listed, so it is not granted either.
    for where in ("default", "kube-system", namespace, ""):
        everything = [*CALLS, INLINE, *SECRETS, *NEVER, *OTHER_IDENTITIES]
        assert operator.granted(everything, where) == [], f"in {where or 'every namespace'}"
    assert operator.granted([*CLUSTER_SCOPED, CRDS], "") == []


def test_standby_adds_its_lease_and_nothing_of_secrets_or_identities(
    install_rbac: Callable[..., Authorizer], namespace: str
) -> None:
    operator = install_rbac("-f", CI_VALUES / "standby-values.yaml", "--set", "operator.inline.enabled=true")
    for where in ("default", namespace, ""):
        assert operator.granted(SECRETS + OTHER_IDENTITIES, where) == [], where
    assert operator.granted(CLUSTER_SCOPED, "") == []


# ------------------------------------------- the documented Secret grant, for real

DOCS = REPO / "docs" / "security.md"


def documented_grant(namespace: str) -> list[Manifest]:
    """The Role and RoleBinding docs/security.md gives to copy, for ``namespace``."""
    section = DOCS.read_text().split("### Granting inline steps a Secret", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    return [doc for doc in yaml.safe_load_all(block.replace("team-a", namespace)) if doc]


def token_kubeconfig(kubectl_path: Path, kubeconfig: Path, account: str, namespace: str, path: Path) -> Path:
    """A kubeconfig holding nothing but a ServiceAccount's token: requests made
    with it are the operator's, as in its pod."""
    token = ok(
        run(kubectl_path, f"--kubeconfig={kubeconfig}", "create", "token", account, "-n", namespace)
    ).strip()
    admin = yaml.safe_load(kubeconfig.read_text())
    cluster = admin["clusters"][0]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": "operator", "user": {"token": token}}],
                "contexts": [
                    {"name": "operator", "context": {"cluster": cluster["name"], "user": "operator"}}
                ],
                "current-context": "operator",
            }
        )
    )
    return path


def test_the_documented_grant_lets_inline_read_that_secret_and_nothing_else(
    install_rbac: Callable[..., Authorizer],
    kubectl_path: Path,
    kubeconfig: Path,
    namespace: str,
    make_namespace: Callable[[], str],
    tmp_path: Path,
) -> None:
    """With the operator's own token: impersonating `kwf-inline` of a namespace
    reads what that namespace granted, and nothing of another namespace; no
    other identity can be taken, and without impersonation no Secret is read."""
    operator = install_rbac("--set", "operator.inline.enabled=true")
    team_a, team_b = make_namespace(), make_namespace()
    admin: list[str | Path] = [kubectl_path, f"--kubeconfig={kubeconfig}"]
    for where in (team_a, team_b):
        for name in ("openai", "other"):
            ok(
                run(
                    *admin,
                    "create",
                    "secret",
                    "generic",
                    name,
                    "-n",
                    where,
                    f"--from-literal=key={name}-{where}",
                )
            )
    grant = {"apiVersion": "v1", "kind": "List", "items": documented_grant(team_a)}
    ok(run(*admin, "apply", "-f", "-", body=grant))

    account = operator.user.rsplit(":", 1)[1]
    as_operator = token_kubeconfig(
        kubectl_path, kubeconfig, account, namespace, tmp_path / "operator.kubeconfig"
    )

    def read(secret: str, where: str, acting_as: str | None) -> subprocess.CompletedProcess[str]:
        who = [f"--as={acting_as}"] if acting_as else []
        return run(
            kubectl_path,
            f"--kubeconfig={as_operator}",
            *who,
            "get",
            "secret",
            secret,
            "-n",
            where,
            "-o",
            "json",
        )

    inline_a = f"system:serviceaccount:{team_a}:kwf-inline"
    got = read("openai", team_a, inline_a)
    assert got.returncode == 0, got.stderr
    value = json.loads(got.stdout)["data"]["key"]
    assert base64.b64decode(value).decode() == f"openai-{team_a}"
    refused = [
        ("other", team_a, inline_a),  # not in the Role's resourceNames
        ("openai", team_b, f"system:serviceaccount:{team_b}:kwf-inline"),  # team-b granted nothing
        ("openai", team_a, f"system:serviceaccount:{team_a}:default"),  # no other identity
        ("openai", team_a, "system:admin"),
        ("openai", team_a, None),  # the operator's own right: none
    ]
    for secret, where, acting_as in refused:
        result = read(secret, where, acting_as)
        assert result.returncode != 0 and "forbidden" in result.stderr.lower(), (secret, where, acting_as)


# ------------------------------------- the operator, with the chart's RBAC alone

KEY = "sk-chart-rbac-5e0b7a"


async def test_the_operator_does_its_work_with_the_charts_rbac_alone(
    install_rbac: Callable[..., Authorizer],
    api: Client,
    kubectl_path: Path,
    kubeconfig: Path,
    namespace: str,
    make_namespace: Callable[[], str],
    tmp_path: Path,
) -> None:
    """The other half of "exactly the calls it makes": `kwf operator` with the
    token of the chart's ServiceAccount, watching one namespace, reads an
    inline step's key through the documented grant, launches a step's batch
    Job, writes status and Events, and stops the Job on cancel, all without
    one refusal from the API server."""
    team = make_namespace()
    operator = install_rbac(
        "--set", f"watchNamespaces={{{team}}}", "--set", "rbac.scope=namespaces",
        "--set", "operator.inline.enabled=true",
    )  # fmt: skip
    admin: list[str | Path] = [kubectl_path, f"--kubeconfig={kubeconfig}"]
    ok(run(*admin, "create", "secret", "generic", "openai", "-n", team, f"--from-literal=api-key={KEY}"))
    ok(
        run(
            *admin,
            "apply",
            "-f",
            "-",
            body={"apiVersion": "v1", "kind": "List", "items": documented_grant(team)},
        )
    )
    account = operator.user.rsplit(":", 1)[1]
    as_operator = token_kubeconfig(
        kubectl_path, kubeconfig, account, namespace, tmp_path / "operator.kubeconfig"
    )
    process = OperatorProcess(
        as_operator,
        tmp_path / "operator.log",
        namespaces=[team],
        extra_args=["--inline", "--inline-allow-cidr", "127.0.0.1/32", "--step-service-account", "kwf-step"],
    )
    process.start()
    try:
        with FakeOpenAI(api_key=KEY) as openai:
            haiku = {
                "name": "haiku",
                "executor": "inline",
                "llm": {
                    "baseURL": openai.base_url,
                    "model": "gpt-test",
                    "prompt": "a haiku",
                    "apiKeySecretRef": {"name": "openai", "key": "api-key"},
                },
                "saveAs": "haiku",
            }
            later = {
                "name": "later",
                "dependsOn": ["haiku"],
                "script": {"language": "shell", "source": "true"},
            }
            await apply_run(api, team, run_body("rbac", [haiku, later]))
            launched = await wait_for(
                lambda: get_run(api, team, "rbac"),
                lambda r: bool(step_status(r, "later").get("job")),
                what="the inline step done and the next one launched",
            )
        assert step_status(launched, "haiku")["phase"] == "Succeeded", launched["status"]
        assert launched["status"]["sharedState"]["haiku"]
        assert [c["metadata"]["name"] for c in await children(api, team, "rbac")] == [
            step_status(launched, "later")["job"]
        ]
        await api.patch(KWF_JOBS, "rbac", {"spec": {"cancel": True}}, team)
        cancelled = await finished(api, team, "rbac")
        assert cancelled["status"]["phase"] == "Cancelled"
        await wait_for(
            lambda: children(api, team, "rbac"), lambda jobs: jobs == [], what="the step's Job deleted"
        )
        events = await api.list(EVENTS, team)
        assert any(e["involvedObject"]["name"] == "rbac" for e in events["items"])
    finally:
        process.stop()
        log = process.log()
        print(f"----- operator log -----\n{process.tail(200)}")
    # Nothing refused, kopf's scans included: with a list of namespaces it must
    # not ask for namespaces or CRDs cluster-wide (refused, it retries them for
    # a minute before it handles the first run).
    refused = [line for line in log.splitlines() if "403" in line or "forbidden" in line.lower()]
    assert refused == []
