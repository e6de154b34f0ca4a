"""The admission webhook, served by a real operator process and called by the
real API server: what the CRD schema cannot refuse (free-form JSON too deep,
a `when` that costs too much, a cycle) is refused at create, naming the field;
a valid run is admitted and runs; the operator's status writes and edits that
leave the spec alone go through.

The webhook is registered as the chart renders it for a release watching the
test's namespace alone, so that no other test meets it, with a URL on
loopback instead of the Service; it is removed after the test whatever happens.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kwf.k8s.api import KWF_JOBS, WORKFLOWS, ApiError, Client, NotFound, Resource
from kwf.operator.admission import MAX_BODY
from tests.support.chart import find, render
from tests.support.operator_process import OperatorProcess
from tests.support.runs import apply_run, finished, get_run, run_body, script, step_status
from tests.support.tools import tool

JSON = Any
WEBHOOKS = Resource("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", namespaced=False)
WHEN_BOMB = "params.l.exists(a, params.l.exists(b, params.l.exists(c, c < 0)))"
SKIPPED = [script("skipped", "print(1)", when="false")]
CYCLE = [script("b", "print(1)", dependsOn=["c"]), script("c", "print(1)", dependsOn=["b"])]


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)


def make_ca(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "ca.crt", folder / "ca.key"
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", cert, "-subj", "/CN=kwf-admission-test-ca", "-days", "1",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
    )  # fmt: skip
    return cert, key


def sign_serving(ca: tuple[Path, Path], cert: Path, key: Path) -> None:
    """A serving certificate for 127.0.0.1; written beside, then moved into
    place, as a Secret volume swaps its files."""
    new_cert, new_key, csr, ext = (cert.with_suffix(s) for s in (".new-crt", ".new-key", ".csr", ".ext"))
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n"
    )
    openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", new_key, "-out", csr, "-subj", "/CN=127.0.0.1",
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-set_serial", str(time.time_ns()),
        "-days", "1", "-sha256", "-extfile", ext, "-out", new_cert,
    )  # fmt: skip
    new_key.replace(key)
    new_cert.replace(cert)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Served:
    def __init__(self, folder: Path) -> None:
        self.ca = make_ca(folder / "ca")
        self.cert, self.key = folder / "tls.crt", folder / "tls.key"
        sign_serving(self.ca, self.cert, self.key)
        self.port = free_port()

    @property
    def args(self) -> list[str]:
        return [
            f"--webhook-port={self.port}",
            "--webhook-host=127.0.0.1",
            f"--webhook-cert={self.cert}",
            f"--webhook-key={self.key}",
        ]

    def presented(self) -> str:
        """The certificate the webhook shows to a new connection, as PEM."""
        return ssl.get_server_certificate(("127.0.0.1", self.port), ca_certs=str(self.ca[0]), timeout=5)


@pytest.fixture
def served(tmp_path: Path) -> Served:
    return Served(tmp_path / "webhook")


@pytest.fixture
def operator_args(served: Served) -> list[str]:
    return served.args


def chart_configuration(namespace: str, served: Served) -> dict[str, JSON]:
    """The chart's ValidatingWebhookConfiguration for a release watching
    ``namespace``, calling this test's operator on loopback instead of the Service."""
    manifests = render(
        tool("helm"), "kwf-system", "--set", f"watchNamespaces={{{namespace}}}",
        "--set", "webhook.failurePolicy=Fail", "--show-only", "templates/webhook.yaml",
    )  # fmt: skip
    (configuration,) = find(manifests, "ValidatingWebhookConfiguration")
    (hook,) = configuration["webhooks"]
    assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == [namespace]
    hook["clientConfig"] = {
        "url": f"https://127.0.0.1:{served.port}/validate",
        "caBundle": base64.b64encode(served.ca[0].read_bytes()).decode(),
    }
    configuration["metadata"] = {"name": f"kwf-{namespace}"[:63]}
    return configuration


@contextlib.asynccontextmanager
async def registered(api: Client, namespace: str, served: Served) -> AsyncIterator[str]:
    """The webhook as the chart registers it, for ``namespace`` alone; removed after."""
    body = chart_configuration(namespace, served)
    name = body["metadata"]["name"]
    try:
        await api.create(WEBHOOKS, body)
        await until_refused(api, namespace)
        yield name
    finally:
        with contextlib.suppress(NotFound):
            await api.delete(WEBHOOKS, name)


@pytest.fixture
async def webhook(
    api: Client, namespace: str, served: Served, operator: OperatorProcess
) -> AsyncIterator[str]:
    async with registered(api, namespace, served) as name:
        yield name


async def dry_run(api: Client, resource: Resource, namespace: str, body: dict[str, JSON]) -> None:
    await api.request("POST", resource.path(namespace), body=body, params={"dryRun": "All"})


async def until_refused(api: Client, namespace: str, within: float = 30.0) -> None:
    """The API server takes up a new configuration within a moment: wait for it."""
    deadline = time.monotonic() + within
    while True:
        try:
            await dry_run(api, KWF_JOBS, namespace, run_body("probe", CYCLE))
        except ApiError as error:
            if "denied the request" in error.message:
                return
            raise
        if time.monotonic() > deadline:
            raise AssertionError(f"the webhook was not called within {within}s")
        await asyncio.sleep(0.2)


async def refused(api: Client, resource: Resource, namespace: str, body: dict[str, JSON]) -> str:
    with pytest.raises(ApiError) as caught:
        await api.create(resource, body, namespace)
    message = caught.value.message
    assert 'admission webhook "validate.workflow.kwf.dev" denied the request: ' in message, message
    with pytest.raises(NotFound):
        await api.get(resource, body["metadata"]["name"], namespace)
    return message.split("denied the request: ", 1)[1]


def nested(depth: int) -> JSON:
    value: JSON = "bottom"
    for _ in range(depth):
        value = {"deeper": value}
    return value


async def test_what_the_crd_cannot_refuse_is_refused_at_create_naming_the_field(
    api: Client, namespace: str, webhook: str
) -> None:
    deep = run_body("deep", SKIPPED, params={"tree": nested(250)})
    assert (await refused(api, KWF_JOBS, namespace, deep)).startswith("spec.params: nested 251 deep, at most")

    bomb = run_body(
        "bomb", [script("ok", "print(1)"), script("b", "print(1)", when=WHEN_BOMB)], params={"l": [1]}
    )
    message = await refused(api, KWF_JOBS, namespace, bomb)
    assert message.startswith("spec.steps[1].when: expression ") and "over the limit" in message

    assert (
        await refused(api, KWF_JOBS, namespace, run_body("cycle", CYCLE)) == "spec.steps: cycle: b -> c -> b"
    )

    workflow = {
        "apiVersion": "workflow.kwf.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "bad"},
        "spec": {"steps": [script("a", "print(1)", dependsOn=["nobody"])]},
    }
    message = await refused(api, WORKFLOWS, namespace, workflow)
    assert message.startswith("spec.steps[0].dependsOn: ") and "nobody" in message


async def test_a_valid_run_is_admitted_runs_and_its_status_is_written(
    api: Client, namespace: str, webhook: str
) -> None:
    await apply_run(api, namespace, run_body("fine", SKIPPED))
    run = await finished(api, namespace, "fine", within=60)
    # The operator's status writes went through: the run ended, its step skipped.
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert step_status(run, "skipped")["phase"] == "Skipped"
    # An edit that breaks the spec is refused like a create ...
    with pytest.raises(ApiError, match=re.escape("spec.steps: cycle: b -> c -> b")):
        await api.patch(KWF_JOBS, "fine", {"spec": {"steps": CYCLE}}, namespace)
    # ... one that leaves the spec alone is not judged.
    labelled = await api.patch(KWF_JOBS, "fine", {"metadata": {"labels": {"team": "a"}}}, namespace)
    assert labelled["metadata"]["labels"]["team"] == "a"
    assert [s["name"] for s in (await get_run(api, namespace, "fine"))["spec"]["steps"]] == ["skipped"]


async def test_a_spec_admitted_before_the_webhook_can_still_be_relabelled_and_deleted(
    api: Client, namespace: str, served: Served, operator: OperatorProcess
) -> None:
    """Registered after the bad Job exists: the webhook must not wedge it."""
    await apply_run(api, namespace, run_body("before", CYCLE))
    async with registered(api, namespace, served):
        await api.patch(KWF_JOBS, "before", {"metadata": {"labels": {"seen": "yes"}}}, namespace)
        await api.delete(KWF_JOBS, "before", namespace)
        await wait_gone(api, namespace, "before")


async def wait_gone(api: Client, namespace: str, name: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            await api.get(KWF_JOBS, name, namespace)
        except NotFound:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{name} still there after {within}s")


async def test_a_rotated_certificate_is_served_without_a_restart(
    namespace: str, served: Served, operator: OperatorProcess
) -> None:
    before = await asyncio.to_thread(served.presented)
    await asyncio.to_thread(sign_serving, served.ca, served.cert, served.key)
    rotated = ssl.PEM_cert_to_DER_cert(served.cert.read_text())
    assert ssl.PEM_cert_to_DER_cert(before) != rotated
    deadline = time.monotonic() + 30
    while ssl.PEM_cert_to_DER_cert(await asyncio.to_thread(served.presented)) != rotated:
        assert time.monotonic() < deadline, "the new certificate was not served within 30s"
        await asyncio.sleep(0.5)
    assert operator.running and operator.starts == 1


def post(served: Served, path: str, body: bytes | None = None) -> tuple[int, JSON]:
    context = ssl.create_default_context(cafile=str(served.ca[0]))
    request = urllib.request.Request(
        f"https://127.0.0.1:{served.port}{path}",
        data=body,
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_the_webhook_answers_health_and_bounds_what_it_reads(
    served: Served, operator: OperatorProcess
) -> None:
    assert await asyncio.to_thread(post, served, "/healthz") == (200, {"ok": True})
    status, reply = await asyncio.to_thread(post, served, "/validate", b'{"kind": "Pod"}')
    assert status == 400 and reply["error"].startswith("not an AdmissionReview: expected apiVersion")
    huge = json.dumps({"padding": "x" * (MAX_BODY + 1)}).encode()
    status, reply = await asyncio.to_thread(post, served, "/validate", huge)
    assert status == 413 and reply == {"error": f"the body is larger than {MAX_BODY} bytes"}
    assert operator.running
