"""Rules that hold across fields, written once for the API server and once for Python.

The API server checks them with CEL (``x-kubernetes-validations`` in the
CRD); everything else that reads a spec (steps returned by a step, the
operator's own parse, ``kwf lint``, ``kwf submit``, local runs) checks the
Python twin. Both halves sit in one :class:`Rule` with one message, and a
unit test evaluates both on a corpus of bad objects, so they cannot drift.

A rule on an object is listed in its model's ``RULES`` (see
:class:`kwf.api.models.Model`); a rule on a single field is put on the
field's type with :meth:`Rule.on_field`, so that both the API server and
pydantic report it at that field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

VALIDATIONS = "x-kubernetes-validations"


@dataclasses.dataclass(frozen=True)
class Rule:
    """``cel`` for the API server, ``holds`` for everything else, one ``message`` for both."""

    cel: str
    message: str
    holds: Callable[[Any], bool] = dataclasses.field(compare=False, repr=False)

    @property
    def wire(self) -> dict[str, str]:
        """The entry of ``x-kubernetes-validations``."""
        return {"rule": self.cel, "message": self.message}

    def check(self, value: Any) -> None:
        """Raise the rule's error (a pydantic error, so it gets the field's location)."""
        if not self.holds(value):
            raise PydanticCustomError("kwf_rule", self.message)

    def on_field(self) -> FieldRule:
        return FieldRule(self)


@dataclasses.dataclass(frozen=True)
class FieldRule:
    """``Annotated[str, rule.on_field()]``: the rule checked on the field, and its
    CEL (``self`` is the field's value) in the field's schema."""

    rule: Rule

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        def check(value: Any) -> Any:
            self.rule.check(value)
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.setdefault(VALIDATIONS, []).append(self.rule.wire)
        return json_schema


#: The renderer fills in ``{{ params.x }}`` as text; in code that is injection,
#: so script source holds no template. A precise CEL match (what the renderer
#: reads as a lookup, see kwf.engine.templates) costs more than the API server
#: allows for 1000 steps of 16 KiB, while ``contains`` fits: so every ``{{`` is
#: refused, a literal one in an f-string or a Go template too.
NO_TEMPLATE_IN_CODE = Rule(
    "!self.contains('{{')",
    "templates are not rendered into code: read params from $KWF_PARAMS and state from $KWF_STATE"
    " (a literal {{ is refused too: build it in code)",
    lambda source: "{{" not in source,
)
