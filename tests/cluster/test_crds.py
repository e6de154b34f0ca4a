"""The generated CRDs on a real API server: they install, every example
passes a server-side dry run, and status moves only through its subresource."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kwf.api import crd as crdgen
from kwf.api.bounds import SOURCE_CHARS
from kwf.api.models import MAX_STEPS
from tests.localcluster.kube import Kube

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))

Manifest = dict[str, Any]


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def get(cluster: Kube, namespace: str, name: str) -> Manifest:
    out = ok(cluster.run("get", "jobs.workflow.kwf.dev", name, "-n", namespace, "-o", "json"))
    body: Manifest = json.loads(out)
    return body


# ------------------------------------------------------------ install


def test_both_crds_are_established_with_their_names(cluster: Kube) -> None:
    for manifest in crdgen.crds().values():
        name = manifest["metadata"]["name"]
        live = json.loads(ok(cluster.run("get", "crd", name, "-o", "json")))
        conditions = {c["type"]: c["status"] for c in live["status"]["conditions"]}
        assert conditions.get("Established") == "True", live["status"]
        assert conditions.get("NamesAccepted") == "True", live["status"]
        assert live["status"]["acceptedNames"]["shortNames"] == manifest["spec"]["names"]["shortNames"]
        assert live["status"]["acceptedNames"]["categories"] == manifest["spec"]["names"]["categories"]


def test_the_crd_files_apply_as_written(cluster: Kube) -> None:
    # What users run (`kubectl apply -f crds/`), read by kubectl's own YAML
    # parser, with the server checking the schema and CEL costs once more.
    result = cluster.run(
        "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f",
        str(REPO / "crds"),
    )  # fmt: skip
    assert ok(result).count("serverside-applied") == len(crdgen.crds()), result.stdout


def cost_probe(
    cluster: Kube, manifest: Manifest, steps: int, source_chars: int = SOURCE_CHARS
) -> subprocess.CompletedProcess[str]:
    """A server dry run of `manifest` under another group, with room for `steps`
    steps whose script source holds up to `source_chars` characters."""
    probe = copy.deepcopy(manifest)
    probe["spec"]["group"] = "cost-probe.kwf.dev"
    probe["metadata"]["name"] = f"{probe['spec']['names']['plural']}.cost-probe.kwf.dev"
    schema = probe["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    steps_schema = schema["properties"]["spec"]["properties"]["steps"]
    steps_schema["maxItems"] = steps
    steps_schema["items"]["properties"]["script"]["properties"]["source"]["maxLength"] = source_chars
    return cluster.run("create", "--dry-run=server", "-o", "name", "-f", "-", body=probe)


@pytest.mark.parametrize("plural", ["jobs", "workflows"])
def test_cel_rules_fit_ten_times_the_steps_allowed(cluster: Kube, plural: str) -> None:
    # The API server refuses a CRD whose rules could cost too much on the
    # largest object; ten times the real bound keeps room for new rules. The
    # search for "{{" in script source scans every character: it fits the
    # steps allowed (the CRD installs), and ten times as many of a tenth the size.
    manifest = next(c for c in crdgen.crds().values() if c["spec"]["names"]["plural"] == plural)
    ok(cost_probe(cluster, manifest, 10 * MAX_STEPS, SOURCE_CHARS // 10))
    refused = cost_probe(cluster, manifest, 10_000 * MAX_STEPS)
    assert refused.returncode != 0
    assert "estimated rule cost exceeds budget" in refused.stderr, refused.stderr


@pytest.mark.parametrize("plural", ["jobs", "workflows"])
def test_the_source_rule_is_what_bounds_the_steps(cluster: Kube, plural: str) -> None:
    # Twice the steps at full length passes the per-rule limit: the message names the source rule.
    manifest = next(c for c in crdgen.crds().values() if c["spec"]["names"]["plural"] == plural)
    refused = cost_probe(cluster, manifest, 2 * MAX_STEPS)
    assert refused.returncode != 0
    assert "properties[source].x-kubernetes-validations" in refused.stderr, refused.stderr
    assert "estimated rule cost exceeds budget" in refused.stderr


# ------------------------------------------------------------ examples


def test_there_are_examples() -> None:
    assert EXAMPLES, "examples/*.yaml is empty"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_passes_a_server_side_dry_run(cluster: Kube, namespace: str, path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    assert documents, f"{path.name} holds no manifest"
    for document in documents:
        result = cluster.run(
        "create", "--dry-run=server", "--validate=strict", "-n", namespace, "-o", "name",
            "-f", "-", body=document,
        )  # fmt: skip
        assert result.returncode == 0, f"{path.name} {document.get('kind')}: {result.stderr}"


# ------------------------------------------------------------ status subresource


def run_manifest(name: str) -> Manifest:
    return {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"steps": [{"name": "a", "script": {"source": "print(1)"}}]},
        "status": {"phase": "Succeeded", "progress": "9/9"},
    }


def test_status_is_dropped_on_create_and_kept_on_spec_updates(cluster: Kube, namespace: str) -> None:
    ok(cluster.run("create", "-n", namespace, "-f", "-", body=run_manifest("run")))
    created = get(cluster, namespace, "run")
    assert "status" not in created
    assert created["metadata"]["generation"] == 1

    status = {"phase": "Running", "progress": "0/1", "sharedState": {"n": 1}}
    ok(cluster.run(
        "patch", "jobs.workflow.kwf.dev", "run", "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": status}),
    ))  # fmt: skip
    patched = get(cluster, namespace, "run")
    assert patched["status"]["phase"] == "Running"
    assert patched["status"]["sharedState"] == {"n": 1}
    assert patched["metadata"]["generation"] == 1, "a status write bumped generation"

    # A write of the main resource that also carries a status: the spec change
    # lands, the status part is ignored.
    update = dict(patched, spec=dict(patched["spec"], suspend=True), status={"phase": "Failed"})
    ok(cluster.run("replace", "-n", namespace, "-f", "-", body=update))
    replaced = get(cluster, namespace, "run")
    assert replaced["spec"]["suspend"] is True
    assert replaced["status"] == patched["status"]
    assert replaced["metadata"]["generation"] == 2

    ok(cluster.run(
        "patch", "jobs.workflow.kwf.dev", "run", "-n", namespace, "--type=merge",
        "-p", json.dumps({"status": {"phase": "Cancelled"}, "metadata": {"labels": {"team": "a"}}}),
    ))  # fmt: skip
    labelled = get(cluster, namespace, "run")
    assert labelled["status"]["phase"] == "Running"
    assert labelled["metadata"]["labels"] == {"team": "a"}
    assert labelled["metadata"]["generation"] == 2, "a metadata change bumped generation"


def test_status_writes_are_validated_too(cluster: Kube, namespace: str) -> None:
    ok(cluster.run("create", "-n", namespace, "-f", "-", body=run_manifest("checked")))
    bad = {"status": {"phase": "Done", "steps": [{"name": "a", "attempts": -1}]}}
    result = cluster.run(
        "patch", "jobs.workflow.kwf.dev", "checked", "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps(bad),
    )  # fmt: skip
    assert result.returncode != 0
    assert 'status.phase: Unsupported value: "Done"' in result.stderr
    assert "status.steps[0].attempts" in result.stderr
    assert "status" not in get(cluster, namespace, "checked")
