"""CEL's grammar, read far enough to know what an expression does and how often.

The CEL library compiles expressions but shows nothing of their structure;
:mod:`kwf.engine.cel_cost` needs it to bound their work. A tree here is made
of tuples: ``("call", name, target, arguments)``, ``("select", operand, field)``,
``("index", operand, index)``, ``("ident", name)``, ``("string", token)``,
``("scalar",)``, ``("list", items)``, ``("map", entries)``, ``("unary", op, x)``,
``("binary", op, a, b)`` and ``("cond", condition, then, otherwise)``.
"""

from __future__ import annotations

import re
from typing import Any


class Unreadable(ValueError):
    """Text that is not CEL, or not CEL that this reader knows."""


_TOKEN = re.compile(
    r"""
    (?P<space>\s+|//[^\n]*)
  | (?P<string>[rRbB]{0,2}(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))
  | (?P<number>0[xX][0-9a-fA-F]+[uU]?|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?[uU]?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[-+*/%<>!?:.,()\[\]{}])
    """,
    re.VERBOSE,
)

Node = tuple[Any, ...]


def _tokens(text: str) -> list[tuple[str, str, int]]:
    found: list[tuple[str, str, int]] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise Unreadable(f"cannot read the expression at position {position}")
        kind = match.lastgroup or ""
        if kind != "space":
            found.append((kind, match.group(), position))
        position = match.end()
    found.append(("end", "", len(text)))
    return found


class _Parser:
    """CEL's grammar, precedence climbing; only what cost needs is kept."""

    _BINARY = (("||",), ("&&",), ("==", "!=", "<", "<=", ">", ">=", "in"), ("+", "-"), ("*", "/", "%"))

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.at = 0

    def peek(self) -> str:
        kind, value, _ = self.tokens[self.at]
        return value if kind in ("op", "name") else kind

    def take(self, expected: str | None = None) -> tuple[str, str, int]:
        token = self.tokens[self.at]
        if expected is not None and self.peek() != expected:
            raise Unreadable(f"expected {expected!r} at position {token[2]}")
        self.at += 1
        return token

    def parse(self) -> Node:
        node = self.expression()
        self.take("end")
        return node

    def expression(self) -> Node:
        condition = self.binary(0)
        if self.peek() != "?":
            return condition
        self.take("?")
        then = self.binary(0)
        self.take(":")
        return ("cond", condition, then, self.expression())

    def binary(self, level: int) -> Node:
        if level == len(self._BINARY):
            return self.unary()
        node = self.binary(level + 1)
        while self.peek() in self._BINARY[level]:
            op = self.take()[1]
            node = ("binary", op, node, self.binary(level + 1))
        return node

    def unary(self) -> Node:
        if self.peek() in ("!", "-"):
            op = self.take()[1]
            return ("unary", op, self.unary())
        return self.member(self.primary())

    def member(self, node: Node) -> Node:
        while True:
            if self.peek() == ".":
                self.take(".")
                if self.peek() == "?":
                    self.take("?")
                kind, name, position = self.take()
                if kind != "name":
                    raise Unreadable(f"expected a field name at position {position}")
                if self.peek() == "(":
                    node = ("call", name, node, self.arguments(")"))
                else:
                    node = ("select", node, name)
            elif self.peek() == "[":
                self.take("[")
                if self.peek() == "?":
                    self.take("?")
                index = self.expression()
                self.take("]")
                node = ("index", node, index)
            elif self.peek() == "{" and node[0] in ("ident", "select"):
                node = ("list", [value for _, value in self.entries("}")])  # a message literal
            else:
                return node

    def arguments(self, closing: str) -> list[Node]:
        self.take()
        found: list[Node] = []
        while self.peek() != closing:
            found.append(self.expression())
            if self.peek() != ",":
                break
            self.take(",")
        self.take(closing)
        return found

    def entries(self, closing: str) -> list[tuple[Node, Node]]:
        self.take()
        found: list[tuple[Node, Node]] = []
        while self.peek() != closing:
            if self.peek() == "?":
                self.take("?")
            key = self.expression()
            self.take(":")
            found.append((key, self.expression()))
            if self.peek() != ",":
                break
            self.take(",")
        self.take(closing)
        return found

    def primary(self) -> Node:
        kind, value, position = self.tokens[self.at]
        if kind == "string":
            self.take()
            return ("string", value)
        if kind == "number":
            self.take()
            return ("scalar",)
        if kind == "name":
            self.take()
            if value in ("true", "false", "null"):
                return ("scalar",)
            if self.peek() == "(":
                return ("call", value, None, self.arguments(")"))
            return ("ident", value)
        if value == ".":  # a name from the root scope: .name
            self.take()
            return self.primary()
        if value == "(":
            self.take()
            node = self.expression()
            self.take(")")
            return node
        if value == "[":
            return ("list", self.arguments("]"))
        if value == "{":
            return ("map", self.entries("}"))
        raise Unreadable(f"unexpected {value or 'end'!r} at position {position}")


def parse(expression: str) -> Node:
    """The expression's tree; raises Unreadable where it cannot be read."""
    try:
        return _Parser(expression).parse()
    except RecursionError:
        raise Unreadable("the expression is nested too deeply") from None
