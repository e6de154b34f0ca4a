"""Images for the local node, built from the project's Dockerfiles without a registry.

No image can be pulled here, so every layer is made on this machine:

- a Debian bookworm base (debootstrap minbase + python3), used as the
  Dockerfiles' BASE build argument in place of python:3.11-slim;
- a wheelhouse with kwf's dependencies (pinned from uv.lock) and its build
  backend, made on the host, so that `pip install --no-index` works in a
  build without network;
- the pause image, from a static binary compiled here.

Each result is kept under `.cluster/images/` with a hash of its inputs; a
build whose inputs did not change is skipped. podman keeps its storage under
`.cluster/podman/`, apart from any system podman.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import shutil
import sys
import time
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path

from . import packages, procs
from .layout import OPERATOR_IMAGE, PAUSE_IMAGE, REPO_ROOT, RUNNER_IMAGE, Layout
from .procs import ClusterError

BASE_IMAGE = "kwf.local/debian-python:bookworm"
BASE_PACKAGES = ("python3", "python3-venv")
SUITE = "bookworm"
# Image name -> (archive stem, Dockerfile).
APP_IMAGES = {
    RUNNER_IMAGE: ("runner", REPO_ROOT / "images" / "runner" / "Dockerfile"),
    OPERATOR_IMAGE: ("operator", REPO_ROOT / "images" / "operator" / "Dockerfile"),
}
# Files of the repository that go into the application images' build context.
CONTEXT_FILES = ("pyproject.toml", "README.md", "uv.lock")
CONTEXT_TREES = ("operator",)


def ctr(layout: Layout) -> list[str]:
    return ["ctr", "--address", str(layout.containerd_socket)]


def podman(layout: Layout) -> list[str]:
    return [
        "podman",
        "--root", str(layout.podman_root),
        "--runroot", str(layout.podman_run),
        "--tmpdir", str(layout.podman_run / "libpod"),
        "--storage-driver", "overlay",
        # crun fails on this machine's hybrid cgroup layout; no systemd either.
        "--runtime", "/usr/sbin/runc",
        "--cgroup-manager", "cgroupfs",
        "--events-backend", "file",
    ]  # fmt: skip


def _hash(*parts: bytes | str | Path) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            digest.update(str(part.relative_to(REPO_ROOT)).encode() + b"\0" + part.read_bytes())
        elif isinstance(part, str):
            digest.update(part.encode())
        else:
            digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()


def _source_files() -> list[Path]:
    files = [REPO_ROOT / name for name in CONTEXT_FILES]
    for tree in CONTEXT_TREES:
        files += sorted(
            path
            for path in (REPO_ROOT / tree).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
        )
    return files


class Stamp:
    """A result and the hash of the inputs it was made from."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.key_file = path.with_name(path.name + ".key")

    def fresh(self, key: str) -> bool:
        return self.path.exists() and self.key_file.exists() and self.key_file.read_text() == key

    def key(self) -> str:
        return self.key_file.read_text() if self.key_file.exists() else ""

    def record(self, key: str) -> None:
        self.key_file.write_text(key)


def build_all(layout: Layout) -> None:
    """Build whatever image is out of date; print what each part took."""
    packages.ensure_debian(packages.IMAGE_PACKAGES)
    layout.images.mkdir(parents=True, exist_ok=True)
    with (layout.images / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time per clone
        _timed("pause image", lambda: build_pause(layout))
        new_base = _timed("Debian base", lambda: build_base(layout))
        new_wheels = _timed("wheelhouse", lambda: build_wheelhouse(layout))
        if new_base or new_wheels:
            # The old dependency layers can never be used again. Otherwise the
            # unnamed images of earlier builds are podman's layer cache: kept.
            procs.run([*podman(layout), "image", "prune", "--force"], check=False)
        for image in APP_IMAGES:
            _timed(image, functools.partial(build_app, layout, image))


def _timed(what: str, action: Callable[[], bool]) -> bool:
    started = time.monotonic()
    built = action()
    print(f"  {what}: {'built' if built else 'cached'} ({time.monotonic() - started:.1f}s)", flush=True)
    return built


def build_pause(layout: Layout) -> bool:
    source, dockerfile = (
        REPO_ROOT / "images" / "pause" / "pause.c",
        REPO_ROOT / "images" / "pause" / "Dockerfile",
    )
    stamp = Stamp(layout.images / "pause.tar")
    key = _hash(source, dockerfile)
    if stamp.fresh(key):
        return False
    context = layout.images / "pause-context"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    procs.run(["gcc", "-static", "-Os", "-Wall", "-Werror", "-o", context / "pause", source])
    procs.run(["strip", context / "pause"])
    _build_and_save(layout, PAUSE_IMAGE, context, dockerfile, stamp.path)
    stamp.record(key)
    return True


def build_base(layout: Layout) -> bool:
    """A Debian root filesystem with python3, imported into podman as BASE_IMAGE."""
    stamp = Stamp(layout.images / "base.tar")
    key = _hash(SUITE, *BASE_PACKAGES, "trimmed")
    built = False
    if not stamp.fresh(key):
        rootfs = layout.images / "base-rootfs"
        shutil.rmtree(rootfs, ignore_errors=True)
        procs.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, rootfs,
             debian_mirror()]
        )  # fmt: skip
        _trim(rootfs)
        procs.run(["tar", "--numeric-owner", "-C", rootfs, "-cf", f"{stamp.path}.tmp", "."])
        Path(f"{stamp.path}.tmp").replace(stamp.path)
        shutil.rmtree(rootfs)
        stamp.record(key)
        built = True
    if built or not _podman_has(layout, BASE_IMAGE):
        procs.run([*podman(layout), "import", "--change", 'CMD ["python3"]', stamp.path, BASE_IMAGE])
    return built


def _trim(rootfs: Path) -> None:
    """Drop what no container reads (package caches, manuals, translations): a third of the size."""
    for folder in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/man", "usr/share/info",
                   "usr/share/locale"):  # fmt: skip
        for entry in (rootfs / folder).glob("*"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            elif entry.name != "lock":
                entry.unlink()
    for entry in (rootfs / "usr/share/doc").rglob("*"):
        if entry.is_file() and entry.name != "copyright":
            entry.unlink()


def debian_mirror() -> str:
    """The Debian archive this machine's apt uses (debootstrap needs one)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for source in sources:
        if not source.is_file():
            continue
        for line in source.read_text().splitlines():
            words = line.split()
            if source.suffix == ".sources" and words[:1] == ["URIs:"]:
                uris = [uri for uri in words[1:] if not uri.rstrip("/").endswith("-security")]
                if uris:
                    return uris[0]
            if words[:1] == ["deb"] and SUITE in words:
                uri = next(word for word in words[1:] if "://" in word)
                if not uri.rstrip("/").endswith("-security"):
                    return uri
    raise ClusterError("no Debian archive found in /etc/apt/sources.list*")


def _uv() -> str:
    local = REPO_ROOT / ".tools" / "uv" / "bin" / "uv"
    found = str(local) if local.exists() else shutil.which("uv")
    if found is None:
        raise ClusterError("uv is missing: run `make install` first")
    return found


def _pip() -> list[str]:
    # The project's venv is made by uv and has no pip; any Python 3.11 with pip will do.
    for python in (sys.executable, shutil.which("python3.11"), shutil.which("python3")):
        if python and procs.run([python, "-m", "pip", "--version"], check=False).returncode == 0:
            return [python, "-m", "pip"]
    raise ClusterError("no Python with pip to build the wheelhouse")


def build_wheelhouse(layout: Layout) -> bool:
    """Wheels of kwf's dependencies, pinned by uv.lock, and of hatchling, which builds kwf."""
    wheelhouse = layout.images / "wheelhouse"
    stamp = Stamp(wheelhouse / "constraints.txt")
    key = _hash(REPO_ROOT / "uv.lock", REPO_ROOT / "pyproject.toml", "build backend")
    if stamp.fresh(key):
        return False
    shutil.rmtree(wheelhouse, ignore_errors=True)
    wheelhouse.mkdir(parents=True)
    constraints = procs.run(
        [_uv(), "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "--no-header"],
        cwd=REPO_ROOT,
    ).stdout
    (wheelhouse / "requirements.in").write_text(constraints)
    procs.run(
        [*_pip(), "wheel", "--quiet", "--disable-pip-version-check", "--wheel-dir", wheelhouse,
         "--requirement", wheelhouse / "requirements.in", *_build_requirements()]
    )  # fmt: skip
    stamp.path.write_text(constraints)
    stamp.record(key)
    return True


def _build_requirements() -> list[str]:
    with (REPO_ROOT / "pyproject.toml").open("rb") as file:
        requires: list[str] = tomllib.load(file)["build-system"]["requires"]
    return requires


def _context(layout: Layout) -> Path:
    """The build context: the repository's files the Dockerfiles copy, plus a full wheelhouse."""
    context = layout.images / "context"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    for name in CONTEXT_FILES:
        shutil.copy2(REPO_ROOT / name, context / name)
    for tree in CONTEXT_TREES:
        shutil.copytree(
            REPO_ROOT / tree, context / tree, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    shutil.copytree(layout.images / "wheelhouse", context / "images" / "wheelhouse")
    return context


def build_app(layout: Layout, image: str) -> bool:
    stem, dockerfile = APP_IMAGES[image]
    stamp = Stamp(layout.images / f"{stem}.tar")
    base_key = Stamp(layout.images / "base.tar").key()
    wheels_key = Stamp(layout.images / "wheelhouse" / "constraints.txt").key()
    key = _hash(dockerfile, base_key, wheels_key, *_source_files())
    if stamp.fresh(key):
        return False
    # One context for both images, so the second build reuses the first's layers.
    context = layout.images / "context"
    sources, sources_key = Stamp(context), _hash(wheels_key, *_source_files())
    if not sources.fresh(sources_key):
        _context(layout)
        sources.record(sources_key)
    _build_and_save(
        layout, image, context, dockerfile, stamp.path,
        build_args={
            "BASE": BASE_IMAGE,
            "PIP_OPTIONS": "--no-index --constraint /wheelhouse/constraints.txt",
        },
    )  # fmt: skip
    stamp.record(key)
    return True


def _build_and_save(
    layout: Layout,
    image: str,
    context: Path,
    dockerfile: Path,
    archive: Path,
    build_args: dict[str, str] | None = None,
) -> None:
    args = [f"--build-arg={name}={value}" for name, value in (build_args or {}).items()]
    procs.run(
        [*podman(layout), "build", "--quiet", "--network=none", "--pull=never",
         # podman's default limits exceed what this machine grants its root.
         "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
         "--file", dockerfile, "--tag", image, *args, context],
        env={"TMPDIR": str(_tmpdir(layout))},
    )  # fmt: skip
    archive.unlink(missing_ok=True)
    procs.run([*podman(layout), "save", "--quiet", "--format", "docker-archive", "--output", archive, image])


def _tmpdir(layout: Layout) -> Path:
    path = layout.root / "podman" / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _podman_has(layout: Layout, image: str) -> bool:
    return procs.run([*podman(layout), "image", "exists", image], check=False).returncode == 0


def import_all(layout: Layout, names: Iterable[str] = (PAUSE_IMAGE, RUNNER_IMAGE, OPERATOR_IMAGE)) -> None:
    """Import each built image into the node's containerd unless it holds that very build."""
    imported = layout.root / "containerd" / "imported"
    imported.mkdir(parents=True, exist_ok=True)
    present = set(
        procs.run([*ctr(layout), "--namespace", "k8s.io", "images", "list", "--quiet"]).stdout.split()
    )
    archives = {PAUSE_IMAGE: "pause", RUNNER_IMAGE: "runner", OPERATOR_IMAGE: "operator"}
    for name in names:
        stamp = Stamp(layout.images / f"{archives[name]}.tar")
        if not stamp.path.exists():
            if name == PAUSE_IMAGE:
                raise ClusterError("the pause image is not built: run `make images`")
            print(f"  {name}: not built (make images), not imported", flush=True)
            continue
        record = imported / archives[name]
        if name in present and record.exists() and record.read_text() == stamp.key():
            continue
        procs.run([*ctr(layout), "--namespace", "k8s.io", "images", "import", stamp.path])
        record.write_text(stamp.key())
        print(f"  imported {name}", flush=True)
    _forget_replaced(layout)


def _forget_replaced(layout: Layout) -> None:
    """Drop the references containerd's CRI keeps to builds that a new import replaced.

    A container still running such a build keeps its snapshot; only the
    reference, and in time the content, go.
    """
    listing = procs.run([*ctr(layout), "--namespace", "k8s.io", "images", "list"]).stdout.splitlines()[1:]
    rows = [line.split() for line in listing if line.strip()]
    named = {row[2] for row in rows if not row[0].startswith("sha256:")}
    replaced = [row[0] for row in rows if row[0].startswith("sha256:") and row[2] not in named]
    if replaced:
        procs.run([*ctr(layout), "--namespace", "k8s.io", "images", "remove", *replaced], check=False)
