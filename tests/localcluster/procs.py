"""Daemons started by the cluster, remembered in pid files.

A pid file alone is not proof: after a crash or a reboot the number may belong
to some other process. Each file therefore records the pid, the process's start
time (from /proc) and the program path, and a process counts as ours only when
all three still match. Stopping touches exactly those processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class ClusterError(RuntimeError):
    """Something the developer has to look at: the message says what and where."""


@dataclasses.dataclass(frozen=True)
class Recorded:
    pid: int
    started: str
    program: str

    @classmethod
    def read(cls, path: Path) -> Recorded | None:
        try:
            pid, started, program = path.read_text().split("\n")[:3]
            return cls(int(pid), started, program)
        except (OSError, ValueError):
            return None

    def write(self, path: Path) -> None:
        path.write_text(f"{self.pid}\n{self.started}\n{self.program}\n")

    def alive(self) -> bool:
        return _start_time(self.pid) == self.started and _program(self.pid) == self.program


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; the start time is the
    # 22nd field, the 20th after the closing parenthesis.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return fields[19]


def _program(pid: int) -> str | None:
    try:
        return str(Path(f"/proc/{pid}/exe").readlink()).removesuffix(" (deleted)")
    except OSError:
        return None


def running(pid_file: Path) -> Recorded | None:
    """The process a pid file names, if it is still that process."""
    recorded = Recorded.read(pid_file)
    if recorded is not None and recorded.alive():
        return recorded
    return None


def start(
    name: str,
    argv: Sequence[str | os.PathLike[str]],
    *,
    pid_file: Path,
    log_file: Path,
    env: Mapping[str, str] | None = None,
) -> Recorded:
    """Start a daemon in its own session, so that it outlives `make` and pytest."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {name}\n".encode())
        log.flush()
        process = subprocess.Popen(
            [os.fspath(arg) for arg in argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    # A freshly forked child may not have exec'd yet: wait until /proc shows
    # the real program, so that the recorded path is the daemon's own.
    program = os.path.realpath(os.fspath(argv[0]))
    deadline = time.monotonic() + 5
    while _program(process.pid) != program:
        if process.poll() is not None:
            raise ClusterError(f"{name} exited at once with {process.returncode}; see {log_file}")
        if time.monotonic() > deadline:
            raise ClusterError(f"{name} did not start {program}; see {log_file}")
        time.sleep(0.01)
    recorded = Recorded(process.pid, _start_time(process.pid) or "", program)
    recorded.write(pid_file)
    return recorded


def stop(name: str, pid_file: Path, *, timeout: float = 15) -> bool:
    """Stop the process a pid file names (TERM, then KILL); True if one was running."""
    recorded = running(pid_file)
    if recorded is None:
        pid_file.unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(recorded.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while recorded.alive() and time.monotonic() < deadline:
        _reap(recorded.pid)
        time.sleep(0.05)
    if recorded.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(recorded.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while recorded.alive() and time.monotonic() < deadline:
            _reap(recorded.pid)
            time.sleep(0.05)
    if recorded.alive():
        raise ClusterError(f"{name} (pid {recorded.pid}) survived SIGKILL")
    pid_file.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    # When this very process started the daemon (a pytest session), it is our
    # child and stays a zombie until waited for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; a failure raises with its output attached."""
    result = subprocess.run(
        [os.fspath(arg) for arg in argv],
        input=input,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})} if env else None,
        cwd=cwd,
    )
    if check and result.returncode != 0:
        command = " ".join(os.fspath(arg) for arg in argv)
        raise ClusterError(
            f"`{command}` failed with {result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result


def wait_for(
    what: str, predicate: Callable[[], T], *, timeout: float, interval: float = 0.05, log: Path | None = None
) -> T:
    """Poll until `predicate()` is truthy and return its value, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            hint = f"; see {log}" if log else ""
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}{hint}")
        time.sleep(interval)
