"""How large a spec may be: every bound of the API in one place.

Strings and lists carry ``maxLength``/``maxItems``/``maxProperties`` in the
CRD, so the API server refuses them at admission. Free-form JSON (``params``,
``initialState``, ``http.body``, ``schedule.params``) is kept with
``x-kubernetes-preserve-unknown-fields``, and a structural schema has no
keyword for the nesting depth or the serialized size of such a value: those
two are checked by the models (:class:`FreeForm`), which is what ``kwf lint``,
``kwf submit``, the operator and an admission webhook all run
(:func:`kwf.engine.validation.problems`). Status is written by the operator
and read leniently: none of this applies to it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

PRESERVE = "x-kubernetes-preserve-unknown-fields"

#: Containers inside containers in any free-form value; ``{"a": {"b": 1}}`` is 2 deep.
MAX_DEPTH = 32
#: Serialized (compact UTF-8 JSON) size of each free-form field.
PARAMS_BYTES = 64 * 1024
INITIAL_STATE_BYTES = 256 * 1024  # as large as the shared state may grow (engine Limits.state_bytes)
#: A body is often a piece of the state rendered in, so it may be as large.
HTTP_BODY_BYTES = 256 * 1024
#: Top-level keys of params and initial state.
MAX_KEYS = 1024

#: Strings of a step.
#: script.source: the API server scans each for "{{" (kwf.api.rules), estimating
#: 0.4 per character; 1000 steps of 16 Ki characters use two thirds of its 10M
#: limit for one rule. A longer program belongs in an image (container, script.image).
SOURCE_CHARS = 16 * 1024
TEXT_CHARS = 256 * 1024  # prompts and messages: often the state rendered in
ARG_CHARS = 32 * 1024  # one command or args item, one env value
HEADER_CHARS = 8 * 1024
URL_CHARS = 8 * 1024
IMAGE_CHARS = 1024
NAME_CHARS = 253  # an object name (DNS-1123 subdomain), a Secret key
SHORT_CHARS = 256  # a model name, a quantity, a dotted path
#: Lists and maps of a step.
MAX_ARGS = 256  # command, args
MAX_ENV = 128
MAX_HEADERS = 64
MAX_MESSAGES = 256
MAX_STATUS_CODES = 64
MAX_RESOURCES = 16
#: Seconds anywhere in a spec: about 68 years, and within every integer type Kubernetes uses.
MAX_SECONDS = 2**31 - 1

#: DNS-1123 subdomain: the name of a Secret, a Workflow, most objects.
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: A key of a Secret or ConfigMap: not ``.``, ``..`` nor anything starting with ``..``.
SECRET_KEY_PATTERN = r"^(\.?[-_a-zA-Z0-9][-._a-zA-Z0-9]*)$"
#: A Kubernetes quantity (``500m``, ``1Gi``, ``2``).
QUANTITY_PATTERN = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"


def _kib(size: int) -> str:
    return f"{size} bytes" if size < 1024 else f"{size / 1024:.1f}".removesuffix(".0") + " KiB"


def depth(value: Any) -> int:
    """How deep containers nest in ``value``, without recursion (a hostile value may
    be nested deeper than Python's stack); each container is counted once."""
    deepest = 0
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if id(item) in seen:
            continue
        seen.add(id(item))
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def _as_json(value: Any) -> Any:
    # YAML reads an unquoted date as a date; kubectl sends it as a string.
    if isinstance(value, datetime.date):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def json_problem(value: Any, max_bytes: int, max_depth: int = MAX_DEPTH) -> str | None:
    """Why ``value`` is not a bounded JSON value, or None."""
    nested = depth(value)
    if nested > max_depth:
        return f"nested {nested} deep, at most {max_depth}"
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_as_json)
    except (TypeError, ValueError) as error:
        return f"not JSON: {error}"
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        return f"{_kib(size)} as JSON, at most {_kib(max_bytes)}"
    return None


@dataclasses.dataclass(frozen=True)
class FreeForm:
    """``Annotated[dict[str, Any], FreeForm(PARAMS_BYTES)]``: any JSON, bounded in depth
    and size, kept by the API server as written."""

    max_bytes: int
    max_depth: int = MAX_DEPTH

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        def check(value: Any) -> Any:
            problem = json_problem(value, self.max_bytes, self.max_depth)
            if problem:
                raise PydanticCustomError("kwf_json_bounds", problem)
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema[PRESERVE] = True
        return json_schema
