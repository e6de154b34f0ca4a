"""The local executor's cost per step, against doing the step's work bare.

    python -m bench.local [--smoke]         (make bench-local)

- http: a chain of http steps against a small HTTP server on 127.0.0.1 (its
  own process, so it shares no GIL; a GitHub-shaped body in one write, so no
  Nagle delay hides the figure), run through run_local (plan(), the
  executor, status), against the same requests sent bare with one shared
  httpx2 client in the same run. The difference per step is kwf's overhead;
  the target is under 5 ms.
- script: a chain of trivial python script steps, against running the same
  script as a bare subprocess the same number of times.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2

from kwf.api import Job, JobPhase
from kwf.local.run import run_local
from tests.fakes.github import REPOS

HTTP_STEPS = 100
SCRIPT_STEPS = 20
ROUNDS = 5
TARGET_MS = 5.0
SCRIPT = "import json, os\njson.dump({'output': 1}, open(os.environ['KWF_RESULT'], 'w'))\n"


def serve_repo() -> None:
    """``python -m bench.local --serve``: answer ``GET /repos/nolar/kopf`` on
    keep-alive HTTP/1.1, printing the port first."""
    body = json.dumps({"full_name": "nolar/kopf", **REPOS["nolar/kopf"]}).encode()
    reply = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(reply)  # one write: no Nagle delay between headers and body
                await writer.drain()
        writer.close()

    async def run() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(run())


@contextlib.contextmanager
def repo_server() -> Iterator[str]:
    """The server in its own process, as a remote one would be: neither the GIL
    nor the event loop under test is shared with it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.local", "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}/repos/nolar/kopf"
    finally:
        proc.terminate()
        proc.wait(10)


def chain(kind: str, body: dict[str, Any], count: int) -> Job:
    steps = [
        {"name": f"s{i}", kind: body, **({"dependsOn": [f"s{i - 1}"]} if i else {})} for i in range(count)
    ]
    return Job.model_validate({"metadata": {"name": "bench"}, "spec": {"steps": steps}})


async def timed_run(job: Job) -> float:
    start = time.perf_counter()
    status = await run_local(job)
    elapsed = time.perf_counter() - start
    if status.phase is not JobPhase.SUCCEEDED:
        raise SystemExit(f"the benchmark run did not succeed: {status.message}")
    return elapsed


async def bare_requests(url: str, count: int) -> float:
    async with httpx2.AsyncClient() as client:
        start = time.perf_counter()
        for _ in range(count):
            response = await client.get(url)
            response.raise_for_status()
            response.json()
        return time.perf_counter() - start


async def bare_scripts(count: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "step.py"
        script.write_text(SCRIPT)
        env = {"KWF_RESULT": str(Path(folder) / "result.json"), "PATH": "/usr/bin:/bin"}
        start = time.perf_counter()
        for _ in range(count):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                str(script),
                env=env,
                cwd=folder,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            await proc.communicate()
            if proc.returncode != 0:
                raise SystemExit("the bare script failed")
        return time.perf_counter() - start


def report(name: str, count: int, kwf_s: list[float], bare_s: list[float], target: float | None) -> None:
    kwf_ms = statistics.median(kwf_s) / count * 1000
    bare_ms = statistics.median(bare_s) / count * 1000
    overhead = kwf_ms - bare_ms
    line = (
        f"{name:7} {count:4} steps  kwf {kwf_ms:7.2f} ms/step  bare {bare_ms:7.2f} ms/step  "
        f"overhead {overhead:6.2f} ms/step  ratio {kwf_ms / bare_ms:5.2f}x"
    )
    if target is not None:
        line += f"  (target < {target:g} ms: {'met' if overhead < target else 'MISSED'})"
    print(line, flush=True)


async def main(http_steps: int, script_steps: int, rounds: int) -> None:
    print(f"median of {rounds} rounds; each round runs a chain of steps one after another", flush=True)
    with repo_server() as url:
        http_job = chain("http", {"url": url, "select": "body.stargazers_count"}, http_steps)
        await timed_run(chain("http", {"url": url}, 5))  # warm up imports and the server
        kwf_http, bare_http = [], []
        for _ in range(rounds):
            bare_http.append(await bare_requests(url, http_steps))
            kwf_http.append(await timed_run(http_job))
    report("http", http_steps, kwf_http, bare_http, TARGET_MS)
    script_job = chain("script", {"source": SCRIPT}, script_steps)
    kwf_script, bare_script = [], []
    for _ in range(rounds):
        bare_script.append(await bare_scripts(script_steps))
        kwf_script.append(await timed_run(script_job))
    report("script", script_steps, kwf_script, bare_script, None)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve_repo()
    elif sys.argv[1:] == ["--smoke"]:  # make test: the bench still runs; its figures are not worth reading
        asyncio.run(main(http_steps=5, script_steps=2, rounds=1))
    else:
        asyncio.run(main(HTTP_STEPS, SCRIPT_STEPS, ROUNDS))
