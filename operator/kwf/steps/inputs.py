"""A step's inputs (its rendered spec, params and shared state) as environment variables.

One environment variable fails near 128 KiB (Linux's limit on a single
string), so the inputs are gzipped, base64-encoded and cut into chunks well
below that: ``KWF_INPUTS`` holds the number of chunks, ``KWF_INPUT_0`` ...
``KWF_INPUT_<n-1>`` the chunks. The pod entrypoint decodes them into files.
The same dict fits a ConfigMap's ``data`` just as well.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import gzip
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kwf.api import Step

ENV_COUNT = "KWF_INPUTS"
ENV_CHUNK = "KWF_INPUT_"
#: Characters of one chunk; base64 is ASCII, so also its bytes.
CHUNK = 60 * 1024
#: All chunks together: the pod (and its Job) must stay far below etcd's 1.5 MiB.
MAX_ENCODED = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class StepInputs:
    spec: dict[str, Any]  # the step's wire form, templates rendered
    params: dict[str, Any]
    state: dict[str, Any]


def encode_inputs(
    spec: Step | Mapping[str, Any], params: Mapping[str, Any], state: Mapping[str, Any]
) -> dict[str, str]:
    """Environment variables (name -> value) that carry the inputs, each value < 64 KiB.

    Raises ValueError naming both sizes when the encoded inputs exceed MAX_ENCODED.
    """
    document = {
        "spec": spec.dump() if isinstance(spec, Step) else dict(spec),
        "params": dict(params),
        "state": dict(state),
    }
    raw = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    encoded = base64.b64encode(gzip.compress(raw, mtime=0)).decode("ascii")
    if len(encoded) > MAX_ENCODED:
        raise ValueError(
            f"a step's inputs are {len(raw)} bytes ({len(encoded)} bytes encoded), "
            f"over the cap of {MAX_ENCODED} encoded bytes"
        )
    chunks = [encoded[i : i + CHUNK] for i in range(0, len(encoded), CHUNK)]
    env = {f"{ENV_CHUNK}{n}": chunk for n, chunk in enumerate(chunks)}
    env[ENV_COUNT] = str(len(chunks))
    return env


def has_inputs(env: Mapping[str, str]) -> bool:
    return ENV_COUNT in env


def decode_inputs(env: Mapping[str, str]) -> StepInputs:
    """The inputs back from the variables; ValueError names what is missing or broken."""
    try:
        count = int(env[ENV_COUNT])
    except KeyError:
        raise ValueError(f"{ENV_COUNT} is not set") from None
    except ValueError:
        raise ValueError(f"{ENV_COUNT} must be a number, not {env[ENV_COUNT]!r}") from None
    chunks = []
    for n in range(count):
        name = f"{ENV_CHUNK}{n}"
        if name not in env:
            raise ValueError(f"{name} is not set ({ENV_COUNT}={count})")
        chunks.append(env[name])
    try:
        raw = gzip.decompress(base64.b64decode("".join(chunks), validate=True))
        document = json.loads(raw)
    except (binascii.Error, OSError, EOFError, ValueError) as exc:
        raise ValueError(f"{ENV_CHUNK}0..{count - 1} do not decode: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError("the decoded inputs are not a JSON object")
    parts = {}
    for key in ("spec", "params", "state"):
        value = document.get(key)
        if not isinstance(value, dict):
            raise ValueError(f"the decoded inputs have no {key!r} object")
        parts[key] = value
    return StepInputs(spec=parts["spec"], params=parts["params"], state=parts["state"])


def write_inputs(inputs: StepInputs, directory: Path) -> dict[str, Path]:
    """Write spec.json, params.json and state.json; returns KWF_SPEC/KWF_PARAMS/KWF_STATE -> path."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "KWF_SPEC": (directory / "spec.json", inputs.spec),
        "KWF_PARAMS": (directory / "params.json", inputs.params),
        "KWF_STATE": (directory / "state.json", inputs.state),
    }
    for path, value in files.values():
        path.write_text(json.dumps(value), encoding="utf-8")
    return {name: path for name, (path, _) in files.items()}
