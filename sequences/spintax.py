"""Template text syntax: the one parser for spintax ``{a|b|c}`` and variables ``${a.b(args)}``.

Owns turning template text (captions, comments, typed text) into an AST and choosing spintax
options. What a variable *means* is `sequences.variables`' job; this module only knows its
shape. Errors raise `VariableError` with the 0-based offset into the original text.

Grammar::

    template := item*
    item     := text | escape | variable | spin
    escape   := "\\" one of  { } | $ \\ ( ) ,        (any other backslash is literal)
    variable := "${" name ( "." name )* [ "(" arg ( "," arg )* ")" ] "}"
              | "${" function " " expression "}"   (function: random.account, count.accounts,
                                                   filter.phones; expression: raw text up to
                                                   the "}", evaluated by sequences.scope_functions)
    name     := [A-Za-z0-9_-]+
    arg      := item*            (ends at an unnested "," or ")"; balanced "(...)" allowed)
    spin     := "{" option ( "|" option )* "}"
    option   := item*            (ends at "|" or "}")

``${`` starts a variable and a bare ``{`` starts spintax, so both nest in each other:
``{Hi ${profile.first_name}|Hello}`` and ``${dynamic.random.choice({a|b},c)}``. Outside
spintax ``|`` is literal text; a ``}`` that closes nothing is an error (write ``\\}``).
Spins and variables nest at most `MAX_NESTING` deep.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Union

from protocol.errors import VariableError
from sequences.scope_functions import FUNCTIONS

ESCAPABLE = frozenset("{}|$\\(),")
# Variables whose name is followed by a space and a scope expression (spec 15.2.3).
SCOPE_FUNCTIONS = frozenset(FUNCTIONS)
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
# The parser (and resolving the tree) recurses per level: a bound far below the interpreter's
# recursion limit keeps "{{{{..." a VariableError at its offset, not a RecursionError.
MAX_NESTING = 16
# A lone surrogate (from JSON's "\\ud800") is not Unicode text: strftime, SQLite and UTF-8
# all raise UnicodeEncodeError on it later, far from the template.
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Text:
    """Literal text (escapes already applied) starting at ``offset``."""

    value: str
    offset: int


@dataclass(frozen=True)
class Var:
    """A variable reference: its dotted ``path``, its arguments (None when written without
    parentheses; each argument is itself a template) and its span ``[offset, end)``."""

    path: tuple[str, ...]
    args: tuple[tuple["Node", ...], ...] | None
    offset: int
    end: int
    # Scope-aware functions (``${count.accounts in account:all@all}``): the raw text after
    # the name, and where it starts in the template.
    expression: str | None = None
    expression_offset: int = 0

    @property
    def name(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class Spin:
    """A spintax choice among ``options`` (each a template), starting at ``offset``."""

    options: tuple[tuple["Node", ...], ...]
    offset: int


Node = Union[Text, Var, Spin]


def parse(text: str) -> tuple[Node, ...]:
    """The AST of template ``text``; raises `VariableError` at the first mistake."""
    if (bad := _SURROGATE.search(text)) is not None:
        raise VariableError(text, bad.start(), f"lone surrogate \\u{ord(bad.group()):04x}: "
                                               "not Unicode text")
    parser = _Parser(text)
    nodes = parser.sequence(stop="")
    return nodes


def spin(text: str, rng: random.Random) -> str:
    """``text`` with its spintax chosen; raises `VariableError` if it names any variable
    (use `sequences.variables.resolve` for text with variables)."""
    def walk(nodes: tuple[Node, ...]) -> str:
        out = []
        for node in nodes:
            if isinstance(node, Text):
                out.append(node.value)
            elif isinstance(node, Spin):
                out.append(walk(choose(node, rng)))
            else:
                raise VariableError(text, node.offset, f"${{{node.name}}}: variables need a "
                                                       "variable context")
        return "".join(out)
    return walk(parse(text))


def choose(node: Spin, rng: random.Random) -> tuple[Node, ...]:
    """One of the spin's options, uniformly."""
    return node.options[rng.randrange(len(node.options))]


class _Parser:
    """Recursive descent over one text; ``pos`` is the next unread character."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0  # spins and variables open around pos

    def fail(self, offset: int, reason: str) -> VariableError:
        return VariableError(self.text, offset, reason)

    def sequence(self, stop: str, in_args: bool = False) -> tuple[Node, ...]:
        """Items up to (not including) an unnested character of ``stop``, or the end."""
        text, nodes = self.text, []
        buf: list[str] = []
        buf_start = self.pos
        depth = 0  # parentheses opened inside an argument

        def flush() -> None:
            if buf:
                nodes.append(Text("".join(buf), buf_start))
                buf.clear()

        while self.pos < len(text):
            c = text[self.pos]
            if c == "\\" and self.pos + 1 < len(text) and text[self.pos + 1] in ESCAPABLE:
                if not buf:
                    buf_start = self.pos
                buf.append(text[self.pos + 1])
                self.pos += 2
                continue
            if c == "$" and text.startswith("${", self.pos):
                flush()
                nodes.append(self.variable())
                buf_start = self.pos
                continue
            if c == "{":
                flush()
                nodes.append(self.spin())
                buf_start = self.pos
                continue
            if in_args and c in ",)" and depth > 0:
                depth -= c == ")"
            elif c in stop:
                break
            elif c == "}":
                raise self.fail(self.pos, "'}' closes nothing (write \\} for a literal brace)")
            elif in_args and c == "(":
                depth += 1
            if not buf:
                buf_start = self.pos
            buf.append(c)
            self.pos += 1
        flush()
        return tuple(nodes)

    def nest(self, start: int) -> None:
        """One more spin or variable opens at ``start``."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.fail(start, f"spintax and variables nest deeper than {MAX_NESTING}")

    def variable(self) -> Var:
        self.nest(self.pos)
        try:
            return self._variable()
        finally:
            self.depth -= 1

    def _variable(self) -> Var:
        text, start = self.text, self.pos
        self.pos += 2
        path: list[str] = []
        while True:
            name_start = self.pos
            while self.pos < len(text) and text[self.pos] in NAME_CHARS:
                self.pos += 1
            if self.pos >= len(text):
                raise self.fail(start, "unterminated variable: missing '}'")
            c = text[self.pos]
            if self.pos == name_start:
                if c == "}" and not path:
                    raise self.fail(start, "empty variable name '${}'")
                what = "empty name part" if c in ".}(" else f"unexpected {c!r}"
                raise self.fail(self.pos, f"{what} in variable name")
            path.append(text[name_start:self.pos])
            if c == ".":
                self.pos += 1
                continue
            if c == "}":
                self.pos += 1
                return Var(tuple(path), None, start, self.pos)
            if c == " " and ".".join(path) in SCOPE_FUNCTIONS:
                close = text.find("}", self.pos)
                if close < 0:
                    raise self.fail(start, "unterminated variable: missing '}'")
                expression_offset = self.pos + 1
                self.pos = close + 1
                return Var(tuple(path), None, start, self.pos, text[expression_offset:close],
                           expression_offset)
            if c == "(":
                args = self.arguments()
                if self.pos >= len(text):
                    raise self.fail(start, "unterminated variable: missing '}'")
                if text[self.pos] != "}":
                    raise self.fail(self.pos, f"expected '}}' after ')', found "
                                              f"{text[self.pos]!r}")
                self.pos += 1
                return Var(tuple(path), args, start, self.pos)
            raise self.fail(self.pos, f"unexpected {c!r} in variable name")

    def arguments(self) -> tuple[tuple[Node, ...], ...]:
        paren = self.pos
        self.pos += 1
        args = []
        while True:
            args.append(self.sequence(stop=",)}", in_args=True))
            if self.pos >= len(self.text) or self.text[self.pos] == "}":
                raise self.fail(paren, "unclosed '(' in variable: missing ')'")
            closing = self.text[self.pos] == ")"
            self.pos += 1
            if closing:
                return tuple(args)

    def spin(self) -> Spin:
        self.nest(self.pos)
        try:
            return self._spin()
        finally:
            self.depth -= 1

    def _spin(self) -> Spin:
        start = self.pos
        self.pos += 1
        options = []
        while True:
            options.append(self.sequence(stop="|}"))
            if self.pos >= len(self.text):
                raise self.fail(start, "unterminated spintax: missing '}'")
            closing = self.text[self.pos] == "}"
            self.pos += 1
            if closing:
                break
        if len(options) == 1 and not options[0]:
            raise self.fail(start, "empty spintax '{}'")
        return Spin(tuple(options), start)
