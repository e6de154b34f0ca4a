"""``kwf lint``: check workflow files offline, with the rules the cluster applies.

Each problem is one line, ``file: path.to.field: problem``, so an editor or CI
log points straight at it. Three kinds are found:

- what the API models reject (the same models the CRD schema is made from),
  and the CEL rules (``x-kubernetes-validations``) they carry for the API
  server, evaluated here with the same CEL;
- what only the whole graph shows (cycles, unknown dependencies, templates);
- YAML 1.1 traps: Kubernetes reads YAML 1.1, where an unquoted ``yes``, ``no``,
  ``on``, ``off``, ``y`` or ``n`` is a boolean. As a key or a value that was
  meant as text it silently changes the object, so every unquoted one is
  reported with its path; quoting it says which was meant.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cel
import pydantic
import yaml

from kwf.api import Job, Step, Workflow
from kwf.engine import graph
from kwf.local.source import Document, SourceError, format_path, parse_document, read_documents

#: Plain scalars that YAML 1.1 (and so Kubernetes) reads as booleans while
#: YAML 1.2 and most people read them as words. true/false are the same in both.
YAML11_BOOLEANS = frozenset(
    word for base in ("y", "yes", "n", "no", "on", "off") for word in (base, base.capitalize(), base.upper())
)


@dataclasses.dataclass(frozen=True)
class Problem:
    where: str  # file, or file#N for the N-th document
    path: str  # dotted path to the field, camelCase as on the wire
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.path or '(document)'}: {self.message}"


def lint_file(path: Path) -> list[Problem]:
    """Every problem of one file, in document order."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return [Problem(str(path), "", exc.strerror or str(exc))]
    try:
        docs = read_documents(path)
    except SourceError as exc:
        return [Problem(str(path), "", str(exc).removeprefix(f"{path}: "))]
    if not docs:
        return [Problem(str(path), "", "no Job or Workflow in the file")]
    problems = list(yaml11_traps(path, text, len(docs)))
    for doc in docs:
        problems.extend(lint_document(doc))
    return problems


def lint_document(doc: Document) -> list[Problem]:
    try:
        obj = parse_document(doc)
    except SourceError as exc:
        return [Problem(doc.where, "kind" if isinstance(doc.data, dict) else "", _after_where(exc, doc))]
    except pydantic.ValidationError as exc:
        return [Problem(doc.where, format_path(e["loc"]), e["msg"]) for e in exc.errors()]
    found = list(schema_rule_problems(obj, ())) + graph_problems(obj)
    return [Problem(doc.where, path, message) for path, message in found]


def schema_rule_problems(model: pydantic.BaseModel, loc: tuple[str | int, ...]) -> Iterator[tuple[str, str]]:
    """(path, message) for each ``x-kubernetes-validations`` rule the object breaks."""
    extra = type(model).model_config.get("json_schema_extra")
    rules: list[dict[str, str]] = extra.get("x-kubernetes-validations", []) if isinstance(extra, dict) else []  # type: ignore[assignment]
    if rules:
        wire = model.model_dump(mode="json", by_alias=True, exclude_none=True)
        for rule in rules:
            if not _rule_holds(rule["rule"], wire):
                yield format_path(loc), rule.get("message") or f"breaks the rule {rule['rule']}"
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        here = (*loc, field.alias or name)
        if isinstance(value, pydantic.BaseModel):
            yield from schema_rule_problems(value, here)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, pydantic.BaseModel):
                    yield from schema_rule_problems(item, (*here, i))


@functools.cache
def _program(rule: str) -> Any:
    return cel.compile(rule)


def _rule_holds(rule: str, wire: dict[str, Any]) -> bool:
    return _program(rule).execute({"self": wire}) is True


def graph_problems(obj: Job | Workflow) -> list[tuple[str, str]]:
    """(path, problem) for what only the whole graph shows."""
    steps = obj.spec.steps
    if not steps:
        return []  # a Job with workflowRef: its graph is the Workflow's
    return [_locate(message, steps) for message in graph.problems(tuple(steps))]


_STEP_MESSAGE = re.compile(r"^step (?P<name>[a-z0-9-]+): (?P<rest>.*)$", re.DOTALL)
_FIELD_FIRST = re.compile(r"^(?P<field>[A-Za-z][A-Za-z0-9_.\[\]]*): (?P<rest>.*)$", re.DOTALL)
_DUPLICATE = re.compile(r"^duplicate step name '(?P<name>[^']+)'")


def _locate(message: str, steps: Sequence[Step]) -> tuple[str, str]:
    """The path a graph problem is about: the step, and its field when known."""
    if match := _DUPLICATE.match(message):
        indices = [i for i, step in enumerate(steps) if step.name == match["name"]]
        return f"spec.steps[{indices[-1]}].name", message
    match = _STEP_MESSAGE.match(message)
    if match is None:
        return "spec.steps", message  # about several steps at once: a cycle
    index = next((i for i, step in enumerate(steps) if step.name == match["name"]), None)
    if index is None:
        return "spec.steps", message
    path, rest = f"spec.steps[{index}]", match["rest"]
    for field in ("dependsOn", "onFailure"):
        if rest.startswith(field + " "):
            return f"{path}.{field}", rest
    if field_match := _FIELD_FIRST.match(rest):
        return f"{path}.{field_match['field']}", field_match["rest"]
    return path, rest


def yaml11_traps(path: Path, text: str, count: int) -> Iterator[Problem]:
    """Unquoted YAML 1.1 booleans, keys and values alike, with their paths."""
    try:
        nodes = [node for node in yaml.compose_all(text) if node is not None]
    except yaml.YAMLError:
        return  # read_documents has reported it already
    for index, node in enumerate(nodes, start=1):
        where = str(path) if count == 1 else f"{path}#{index}"
        for loc, scalar, is_key in _walk(node, ()):
            if scalar.style is None and scalar.value in YAML11_BOOLEANS:
                meaning = "true" if scalar.value.lower() in ("y", "yes", "on") else "false"
                what = "key" if is_key else "value"
                yield Problem(
                    where,
                    format_path(loc),
                    f"unquoted {what} {scalar.value!r} (line {scalar.start_mark.line + 1}) is the boolean "
                    f"{meaning} in YAML 1.1, which Kubernetes reads: quote it if text was meant, "
                    f"or write {meaning}",
                )


def _walk(
    node: yaml.Node, loc: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], yaml.ScalarNode, bool]]:
    if isinstance(node, yaml.ScalarNode):
        yield loc, node, False
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _walk(item, (*loc, i))
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            if isinstance(key, yaml.ScalarNode):
                yield (*loc, name), key, True
            yield from _walk(value, (*loc, name))


def _after_where(exc: Exception, doc: Document) -> str:
    text = str(exc)
    return text.removeprefix(f"{doc.where}: ").removeprefix("kind: ")


def lint_paths(paths: list[Path]) -> list[Problem]:
    """Problems of several files; a directory means its *.yaml and *.yml files."""
    problems: list[Problem] = []
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
            for file in files:
                problems.extend(lint_file(file))
        else:
            problems.extend(lint_file(path))
    return problems
