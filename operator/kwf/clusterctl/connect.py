"""Where the cluster commands talk to, how they print data, and how they fail.

Exit codes (the same for every cluster command):

- 0: done (for ``watch`` and ``submit --watch``: the run succeeded)
- 1: the run finished without succeeding
- 2: bad input: arguments, a file, or an object the API server rejected
- 3: not found: the run, a step, a key of the shared state
- 4: the cluster: unreachable, credentials refused, forbidden, or kept changing
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import json
import os
import ssl
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import httpx2
import typer
import yaml

from kwf.api import GROUP, VERSION
from kwf.k8s.api import KWF_JOBS, ApiError, Client, Config, Invalid, NotFound, load_config, load_kubeconfig

JSON = Any
T = TypeVar("T")

EXIT_FINISHED_UNSUCCESSFUL = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_FOUND = 3
EXIT_CLUSTER = 4


class CliError(Exception):
    """A failure to report in one line, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_CLUSTER) -> None:
        super().__init__(message)
        self.code = code


class Format(enum.StrEnum):
    TEXT = "text"
    JSON = "json"
    YAML = "yaml"


Kubeconfig = Annotated[
    Path | None,
    typer.Option("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)"),
]
Context = Annotated[str | None, typer.Option("--context", help="kubeconfig context (default: current)")]
Namespace = Annotated[
    str | None, typer.Option("--namespace", "-n", help="namespace (default: the context's, else default)")
]
Output = Annotated[Format, typer.Option("--output", "-o", help="text, json or yaml")]


@dataclasses.dataclass(frozen=True)
class Target:
    """The cluster and namespace a command works in, from its options."""

    kubeconfig: Path | None = None
    context: str | None = None
    namespace: str | None = None

    def config(self) -> Config:
        try:
            if self.context:
                default = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config"
                return load_kubeconfig(self.kubeconfig or default, self.context)
            return load_config(self.kubeconfig)
        except (OSError, ValueError, KeyError, yaml.YAMLError, ssl.SSLError) as exc:
            # The exception's text, never the file's: it may hold keys and tokens.
            where = self.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise CliError(f"cannot use kubeconfig {where}: {type(exc).__name__}: {exc}") from None


def run(command: str, target: Target, work: Callable[[Client, str], Awaitable[T]]) -> T:
    """Connect, run ``work(api, namespace)``, and turn failures into a message and an exit code."""
    with reported(command, target):
        config = target.config()
        namespace = target.namespace or config.namespace

        async def main() -> T:
            async with Client(config) as api:
                return await work(api, namespace)

        return asyncio.run(main())
    raise AssertionError("unreachable")  # reported() exits on every failure


@contextlib.contextmanager
def reported(command: str, target: Target | None = None) -> Iterator[None]:
    """Any failure inside becomes one line on stderr and the matching exit code."""
    try:
        yield
    except CliError as exc:
        fail(command, str(exc), exc.code)
    except Invalid as exc:
        fail(command, f"rejected by the API server: {exc.message}", EXIT_BAD_INPUT)
    except ApiError as exc:
        code = EXIT_NOT_FOUND if isinstance(exc, NotFound) else EXIT_CLUSTER
        fail(command, f"{exc.status} {exc.reason}: {exc.message}", code)
    except httpx2.TransportError as exc:
        where = (target and target.kubeconfig) or os.environ.get("KUBECONFIG") or "~/.kube/config"
        fail(command, f"cannot reach the API server (kubeconfig {where}): {exc}", EXIT_CLUSTER)


def fail(command: str, message: str, code: int) -> NoReturn:
    typer.echo(f"kwf {command}: {message}", err=True)
    raise typer.Exit(code)


# ------------------------------------------------------------------- runs


def run_not_found(error: NotFound, name: str, namespace: str) -> CliError:
    """NotFound either means no such run or no such resource type (CRDs missing)."""
    details = error.body.get("details") or {}
    if details.get("name") == name or not error.body:
        return CliError(f"run {name!r} not found in namespace {namespace!r}", EXIT_NOT_FOUND)
    return CliError(
        f"the API server has no {GROUP}/{VERSION} jobs ({error.message}); are the kwf CRDs installed?",
        EXIT_NOT_FOUND,
    )


async def read_run(api: Client, namespace: str, name: str) -> dict[str, JSON]:
    try:
        return await api.get(KWF_JOBS, name, namespace)
    except NotFound as exc:
        raise run_not_found(exc, name, namespace) from None


async def patch_run(
    api: Client,
    namespace: str,
    name: str,
    patch: Mapping[str, JSON],
    *,
    subresource: str | None = None,
    resource_version: str | None = None,
) -> dict[str, JSON]:
    try:
        return await api.patch(
            KWF_JOBS, name, patch, namespace, subresource=subresource, resource_version=resource_version
        )
    except NotFound as exc:
        raise run_not_found(exc, name, namespace) from None


# ------------------------------------------------------------------- output


def clean(obj: Mapping[str, JSON]) -> dict[str, JSON]:
    """An object as shown to people: without managedFields (noise, often huge)."""
    data = dict(obj)
    meta = dict(data.get("metadata") or {})
    meta.pop("managedFields", None)
    if meta:
        data["metadata"] = meta
    return data


def render(data: JSON, fmt: Format) -> str:
    if fmt is Format.YAML:
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n")
    return json.dumps(data, indent=2, ensure_ascii=False)


def echo_data(data: JSON, fmt: Format) -> None:
    typer.echo(render(data, fmt))


def parse_assignments(items: list[str], what: str) -> dict[str, JSON]:
    """``key=value`` pairs; a value is JSON when it parses as JSON, else a string."""
    values: dict[str, JSON] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            where = f"{what}: " if what else ""
            raise CliError(f"{where}expected key=value, got {item!r}", EXIT_BAD_INPUT)
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw
    return values
