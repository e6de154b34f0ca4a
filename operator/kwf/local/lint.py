"""``kwf lint``: check workflow files offline, with the rules the cluster applies.

Each problem is one line, ``file: path.to.field: problem``, so an editor or CI
log points straight at it. Three kinds are found:

- what the API models reject (the same models the CRD schema is made from,
  with a twin of each CEL rule the API server checks) and what only the
  whole graph shows (cycles, unknown dependencies, templates): both through
  :func:`kwf.engine.validation.problems`, as ``kwf submit`` does;
- YAML 1.1 traps: Kubernetes reads YAML 1.1, where an unquoted ``yes``, ``no``,
  ``on``, ``off``, ``y`` or ``n`` is a boolean. As a key or a value that was
  meant as text it silently changes the object, so every unquoted one is
  reported with its path; quoting it says which was meant.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import yaml

from kwf.engine import validation
from kwf.local.source import Document, SourceError, read_documents

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
    return [Problem(doc.where, p.field, p.message) for p in validation.problems(doc.data)]


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
                    validation.field_path(loc),
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
