"""Results too large for the termination message travel framed in the pod log.

A frame is base64 between a begin and an end marker line; the begin line
carries the length and the sha256 of the data, the end line repeats the
sha256. Whatever a step printed before or after is ignored, and a step that
prints something that looks like a frame cannot pass it off as the result:
the termination message names the sha256 of the real one.

    <newline>
    ----- kwf result begin v1 bytes=1234 sha256=<64 hex> -----
    <base64, 76 characters a line>
    ----- kwf result end sha256=<64 hex> -----

Log lines must reach :func:`unframe` as the step wrote them (``kubectl logs``
without ``--timestamps``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re

LINE = 76
#: What a step may print after its frame, and line ends, within a log budget.
_SLACK_BYTES = 4096
_BEGIN = re.compile(r"----- kwf result begin v1 bytes=(\d+) sha256=([0-9a-f]{64}) -----")
_END = re.compile(r"----- kwf result end sha256=([0-9a-f]{64}) -----")


class FrameError(ValueError):
    """A frame began in the log but is cut short or does not match its header."""


def frame(data: bytes) -> str:
    """The text to print: it starts and ends with a newline, so it sits on lines of its own."""
    digest = hashlib.sha256(data).hexdigest()
    encoded = base64.b64encode(data).decode("ascii")
    body = "".join(encoded[i : i + LINE] + "\n" for i in range(0, len(encoded), LINE))
    return (
        f"\n----- kwf result begin v1 bytes={len(data)} sha256={digest} -----\n"
        f"{body}"
        f"----- kwf result end sha256={digest} -----\n"
    )


def log_budget(size: int) -> tuple[int, int]:
    """(lines, bytes) at the end of a log that hold the frame of ``size`` bytes of
    data, with room for a line or two after it: what a reader asks for, so that
    it never reads more of a log than the result it wants."""
    encoded = 4 * math.ceil(size / 3)
    body_lines = math.ceil(encoded / LINE)
    lines = body_lines + 3  # the blank line before, begin, end
    header = len(f"----- kwf result begin v1 bytes={size} sha256={'0' * 64} -----")
    return lines + 2, encoded + body_lines + 2 * header + _SLACK_BYTES


def unframe(log_text: str, *, sha256: str | None = None) -> bytes | None:
    """The data of the last intact frame in ``log_text`` (of the one with ``sha256``
    when given); None when no frame begins at all.

    Raises FrameError when a frame begins but none that counts is intact, with
    what is wrong with the last one: cut short, bad base64, wrong size or hash.
    """
    found: bytes | None = None
    problem: str | None = None
    lines = log_text.splitlines()
    i = 0
    while i < len(lines):
        begin = _BEGIN.search(lines[i])
        i += 1
        if begin is None:
            continue
        size, digest = int(begin.group(1)), begin.group(2)
        body: list[str] = []
        ended = False
        while i < len(lines):
            line = lines[i].strip()
            if _BEGIN.search(line):
                break  # a new frame starts: this one was cut short
            i += 1
            end = _END.search(line)
            if end is not None:
                ended = end.group(1) == digest
                break
            body.append(line)
        if sha256 is not None and digest != sha256:
            continue
        if not ended:
            problem = f"the frame of {size} bytes is cut short (no end line)"
            continue
        try:
            data = base64.b64decode("".join(body), validate=True)
        except (binascii.Error, ValueError):
            problem = f"the frame of {size} bytes holds invalid base64"
            continue
        if len(data) != size:
            problem = f"the frame says {size} bytes but holds {len(data)}"
            continue
        if hashlib.sha256(data).hexdigest() != digest:
            problem = f"the frame of {size} bytes does not match its sha256"
            continue
        found, problem = data, None
    if found is None and problem is not None:
        raise FrameError(problem)
    return found
