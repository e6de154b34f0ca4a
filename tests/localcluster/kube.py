"""A test's handle on a cluster: its kubeconfig, kubectl, namespaces and CRDs.

It is the same for the local cluster and for a kind cluster; tests receive it
through the `cluster` fixture (tests/localcluster/fixtures.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

from .layout import REPO_ROOT


@dataclasses.dataclass(frozen=True)
class Kube:
    kubeconfig: Path
    kubectl_path: Path
    # Where a pod reaches a server that a test runs on this machine; None
    # without a node.
    host_address: str | None = None
    node_name: str | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def run(self, *args: str, body: Any = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """kubectl's whole answer, refusals included. A body goes in as JSON:
        kubectl reads YAML 1.1, where a key `n:` is false."""
        return subprocess.run(
            [str(self.kubectl_path), *args],
            input=body if isinstance(body, str) or body is None else json.dumps(body),
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> str:
        """Run kubectl against this cluster; its stdout, or an AssertionError with its stderr."""
        result = self.run(*args, body=input, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result.stdout

    def get(self, *args: str) -> Any:
        """`kubectl get ... -o json`, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def apply(self, manifest: dict[str, Any] | str, namespace: str | None = None) -> str:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        scope = ["--namespace", namespace] if namespace else []
        return self.kubectl("apply", "--server-side", "--force-conflicts", *scope, "-f", "-", input=text)

    def create_namespace(self, hint: str = "test") -> str:
        """A new namespace, ready for pods (its default service account exists)."""
        name = namespace_name(hint)
        self.kubectl("create", "namespace", name)
        deadline = time.monotonic() + 30
        # The ServiceAccount admission plugin rejects pods until the
        # controller-manager has made the namespace's `default` account.
        while not self.kubectl(
            "get", "serviceaccount", "default", "-n", name, "--ignore-not-found", "-o", "name"
        ):
            if time.monotonic() > deadline:
                raise AssertionError(f"no default service account in {name} after 30s")
            time.sleep(0.05)
        return name

    def delete_namespace(self, name: str) -> None:
        # Not waiting: the garbage collector finishes it while later tests run.
        self.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)

    async def create_namespace_async(self, hint: str = "test") -> str:
        return await asyncio.to_thread(self.create_namespace, hint)

    async def delete_namespace_async(self, name: str) -> None:
        await asyncio.to_thread(self.delete_namespace, name)

    def apply_crds(self, folder: Path = REPO_ROOT / "crds", timeout: float = 60) -> list[str]:
        """Apply every CRD file in `folder` and wait until each is Established."""
        names: list[str] = []
        for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
            output = self.kubectl(
                "apply", "--server-side", "--force-conflicts", "-o", "name", "-f", str(path)
            )
            names += [line for line in output.split() if line.startswith("customresourcedefinition")]
        if names:
            self.kubectl("wait", "--for=condition=Established", f"--timeout={int(timeout)}s", *names)
        return names


def namespace_name(hint: str) -> str:
    """A DNS-1123 label from a test's name, unique per call."""
    slug = re.sub(r"[^a-z0-9-]+", "-", hint.lower()).strip("-")[:40].strip("-") or "test"
    return f"t-{slug}-{secrets.token_hex(3)}"
