"""The chart's values, schema and CRDs agree with each other and with crds/.

These need no helm binary; what helm itself makes of the chart is tested in
tests/cluster/test_chart.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kwf"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def value_paths(values: Any, schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(path, value, schema of it) for every value under a schema that lists its properties."""
    if not isinstance(values, dict) or "properties" not in schema:
        return
    for key, value in values.items():
        sub = schema["properties"].get(key)
        yield f"{path}.{key}", value, sub
        if sub is not None:
            yield from value_paths(value, sub, f"{path}.{key}")


def schema_objects(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if "properties" in schema:
        yield path, schema
        for key, sub in schema["properties"].items():
            yield from schema_objects(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        yield from schema_objects(schema["items"], f"{path}[]")


def test_every_value_is_described_by_the_schema() -> None:
    missing = [path for path, _, sub in value_paths(VALUES, SCHEMA) if sub is None]
    assert not missing, f"values.yaml keys absent from values.schema.json: {missing}"


def test_every_described_object_rejects_unknown_keys() -> None:
    open_objects = [
        path or "." for path, sub in schema_objects(SCHEMA) if sub.get("additionalProperties") is not False
    ]
    assert not open_objects, f"schema objects without additionalProperties: false: {open_objects}"


def test_the_schema_describes_no_value_that_does_not_exist() -> None:
    """A key in the schema but not in values.yaml is a leftover or a typo."""
    stale = []
    for path, sub in schema_objects(SCHEMA):
        node: Any = VALUES
        for key in filter(None, path.split(".")):
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if "[]" in path:
            continue
        stale += [f"{path}.{key}" for key in sub["properties"] if key != "global" and key not in node]
    assert not stale, f"schema keys with no default in values.yaml: {stale}"


TYPES = {"string": str, "integer": int, "boolean": bool, "object": dict, "array": list}


@pytest.mark.parametrize(
    "path,value,sub", [p for p in value_paths(VALUES, SCHEMA) if p[2] and "type" in p[2]]
)
def test_defaults_have_their_declared_type(path: str, value: Any, sub: dict[str, Any]) -> None:
    assert isinstance(value, TYPES[sub["type"]]), f"{path}: {value!r} is not {sub['type']}"
    if "enum" in sub:
        assert value in sub["enum"], f"{path}: {value!r} not in {sub['enum']}"


def test_defaults_fit_the_test_cluster_and_a_least_privilege_install() -> None:
    assert VALUES["operator"]["image"]["repository"] == "kwf.local/operator"
    assert VALUES["runner"]["image"]["repository"] == "kwf.local/runner"
    assert VALUES["operator"]["inline"]["enabled"] is False
    assert VALUES["operator"]["securityContext"]["readOnlyRootFilesystem"] is True
    assert VALUES["operator"]["podSecurityContext"]["runAsNonRoot"] is True
    assert VALUES["crds"]["install"] is True
    assert VALUES["operator"]["hostNetwork"] is False
    assert VALUES["imagePolicy"]["enabled"] is False


def test_the_inline_service_account_is_the_one_the_operator_impersonates_by_default() -> None:
    """The chart grants impersonation of this name; `kwf operator` run by hand
    must ask for the same one, or its inline steps could read no Secret."""
    from kwf.operator.step_secrets import DEFAULT_INLINE_SERVICE_ACCOUNT

    assert VALUES["operator"]["inline"]["serviceAccountName"] == DEFAULT_INLINE_SERVICE_ACCOUNT


def crd_files(folder: Path) -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(folder.glob("*.yaml"))}


def test_chart_crds_are_the_generated_ones() -> None:
    generated = crd_files(ROOT / "crds")
    assert generated, "crds/ is empty: run make crds"
    assert crd_files(CHART / "files" / "crds") == generated, (
        "the chart's CRDs drifted from crds/: run make chart-crds"
    )
