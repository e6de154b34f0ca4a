"""The CEL half of admission, run here: every ``x-kubernetes-validations`` rule of
the generated CRDs, evaluated with the same CEL library ``kwf`` uses."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import cel

from kwf.api import crd as crdgen

Node = dict[str, Any]


@functools.cache
def spec_schema(plural: str) -> Node:
    by_plural = {c["spec"]["names"]["plural"]: c for c in crdgen.crds().values()}
    schema: Node = by_plural[plural]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def rules(plural: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(schema path, rule) for every rule of a CRD; lists as ``[]``."""

    def walk(node: Node, path: str) -> Iterator[tuple[str, dict[str, str]]]:
        for rule in node.get("x-kubernetes-validations", []):
            yield path, rule
        for name, sub in node.get("properties", {}).items():
            yield from walk(sub, f"{path}.{name}" if path else name)
        if "items" in node:
            yield from walk(node["items"], f"{path}[]")

    return walk(spec_schema(plural), "")


@functools.cache
def _program(rule: str) -> Any:
    return cel.compile(rule)


def holds(rule: str, value: Any) -> bool:
    return _program(rule).execute({"self": value}) is True


def refusals(plural: str, document: Any) -> list[tuple[str, str]]:
    """(field, message) for each rule the document breaks, as the API server would report it."""
    found: list[tuple[str, str]] = []

    def walk(node: Node, value: Any, path: str) -> None:
        for rule in node.get("x-kubernetes-validations", []):
            if not holds(rule["rule"], value):
                found.append((path, rule["message"]))
        if isinstance(value, dict):
            for name, sub in node.get("properties", {}).items():
                if name in value:
                    walk(sub, value[name], f"{path}.{name}" if path else name)
        elif isinstance(value, list) and "items" in node:
            for index, item in enumerate(value):
                walk(node["items"], item, f"{path}[{index}]")

    walk(spec_schema(plural), document, "")
    return found
