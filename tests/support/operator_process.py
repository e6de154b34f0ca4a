"""The operator as a real process (``kwf operator``) against the test cluster.

Cluster and e2e tests start it, kill it (SIGKILL, to test restarts), and read
its log; the log is printed when a test fails, so a failure shows what the
operator saw.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parents[2]
READY_LINE = "kwf operator ready"


class OperatorError(RuntimeError):
    pass


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: Path | str,
        log_file: Path,
        *,
        namespaces: Sequence[str] = (),
        runner_image: str | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.kubeconfig = str(kubeconfig)
        self.log_file = log_file
        self.namespaces = list(namespaces)
        self.runner_image = runner_image
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "kwf.cli", "operator", "--kubeconfig", self.kubeconfig, "--verbose"]
        for namespace in self.namespaces:
            argv += ["--namespace", namespace]
        if self.runner_image:
            argv += ["--runner-image", self.runner_image]
        return argv + self.extra_args

    def start(self, *, wait_ready: bool = True, timeout: float = 60.0) -> None:
        if self.running:
            raise OperatorError("the operator is running already")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        env = {
            **os.environ,
            **self.env,
            "PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{REPO}",
            "PYTHONUNBUFFERED": "1",
        }
        with self.log_file.open("ab") as log:
            log.write(f"\n===== operator start #{self.starts + 1}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True
            )
        self.starts += 1
        if wait_ready:
            self.wait_ready(timeout, offset)

    def wait_ready(self, timeout: float = 60.0, offset: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise OperatorError(
                    f"the operator exited with {self.returncode} before it was ready:\n{self.tail()}"
                )
            if READY_LINE in self.log(offset):
                return
            time.sleep(0.05)
        raise OperatorError(f"the operator was not ready within {timeout}s:\n{self.tail()}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def kill(self) -> None:
        """SIGKILL: no chance to finish anything, as a crash or an OOM kill."""
        if self.process is not None and self.running:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.process is None or not self.running:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self, *, kill: bool = True) -> None:
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def log(self, offset: int = 0) -> str:
        if not self.log_file.exists():
            return ""
        with self.log_file.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def __enter__(self) -> OperatorProcess:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
