"""The `calculate_output` language of multi graders: a tiny arithmetic parser and evaluator.

Grammar (recursive descent; `^` binds tighter than unary minus and is right-associative,
so `-a^2` is `-(a^2)` and `2^3^2` is `2^9`):

    expr   := term (("+" | "-") term)*
    term   := unary (("*" | "/") unary)*
    unary  := ("-" | "+") unary | power
    power  := atom ("^" unary)?
    atom   := NUMBER | NAME | FUNC "(" expr ("," expr)* ")" | "(" expr ")"

Names are the sub-graders' names; functions are `min`, `max` (one or more arguments),
`abs`, `floor`, `ceil`, `exp`, `sqrt` and `log` (natural). Nothing else exists: no
attributes, strings, indexing or other calls, and Python's `eval` is never used.
Everything is checked when the grader is loaded (`parse_formula` raises ValueError naming
the column); math errors at run time (division by zero, log of a non-positive number,
overflow) raise `FormulaMathError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

MAX_LENGTH = 1000
"""Longest formula accepted, in characters."""
MAX_DEPTH = 32
"""Deepest nesting accepted (parentheses, calls, unary signs and powers)."""

FUNCTIONS: dict[str, tuple[Callable[..., float], int | None]] = {
    "min": (lambda *xs: min(xs), None),
    "max": (lambda *xs: max(xs), None),
    "abs": (abs, 1),
    "floor": (lambda x: float(math.floor(x)), 1),
    "ceil": (lambda x: float(math.ceil(x)), 1),
    "exp": (math.exp, 1),
    "sqrt": (math.sqrt, 1),
    "log": (math.log, 1),
}
"""Function name -> (implementation, number of arguments; None: one or more)."""

_TOKEN = re.compile(
    r"\s*(?:(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>[-+*/^(),]))"
)


class FormulaMathError(ArithmeticError):
    """A formula could not be computed for these values (its message says why)."""


@dataclass(frozen=True)
class Number:
    value: float


@dataclass(frozen=True)
class Name:
    name: str


@dataclass(frozen=True)
class Negate:
    operand: Node


@dataclass(frozen=True)
class Binary:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Call:
    function: str
    args: tuple[Node, ...]


Node = Number | Name | Negate | Binary | Call


@dataclass(frozen=True)
class Formula:
    """A parsed formula and the names it reads."""

    source: str
    tree: Node
    names: frozenset[str]

    def evaluate(self, values: Mapping[str, float]) -> float:
        """The formula's value; FormulaMathError when the math fails or is not finite."""
        try:
            result = _evaluate(self.tree, values)
        except (ArithmeticError, ValueError) as exc:
            raise FormulaMathError(_math_message(exc)) from None
        if not math.isfinite(result):
            raise FormulaMathError(f"the result is {result}")
        return result


def parse_formula(source: str, names: set[str] | frozenset[str]) -> Formula:
    """Parse `source`, allowing the variables `names`; ValueError naming the column."""
    if not isinstance(source, str):
        raise ValueError(f"must be a string formula, got {type(source).__name__}")
    if len(source) > MAX_LENGTH:
        raise ValueError(f"is {len(source)} characters long; at most {MAX_LENGTH} are allowed")
    parser = _Parser(source, frozenset(names))
    tree = parser.parse()
    return Formula(source, tree, frozenset(parser.used))


@dataclass
class _Token:
    kind: str  # number, name, op, end
    text: str
    column: int  # 1-based


def _tokenize(source: str) -> Iterator[_Token]:
    """Tokens left to right; a character outside the language raises when it is reached."""
    position = 0
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None:
            rest = source[position:].lstrip()
            if not rest:
                break
            column = len(source) - len(rest) + 1
            raise ValueError(
                _located(f"unexpected character {rest[0]!r}", source, column)
                + "; a formula holds only numbers, sub-grader names, + - * / ^, parentheses, "
                "commas and the functions " + ", ".join(FUNCTIONS)
            )
        kind = match.lastgroup or "op"
        yield _Token(kind, match.group(kind), match.start(kind) + 1)
        position = match.end()
    yield _Token("end", "", len(source) + 1)


class _Parser:
    def __init__(self, source: str, names: frozenset[str]):
        self.source = source
        self.names = names
        self.stream = _tokenize(source)
        self.tokens: list[_Token] = []
        self.index = 0
        self.depth = 0
        self.used: set[str] = set()

    @property
    def token(self) -> _Token:
        """The current token (read lazily, so errors come in reading order)."""
        while len(self.tokens) <= self.index:
            self.tokens.append(next(self.stream))
        return self.tokens[self.index]

    def fail(self, message: str, token: _Token | None = None) -> ValueError:
        return ValueError(_located(message, self.source, (token or self.token).column))

    def take(self, text: str) -> bool:
        if self.token.kind == "op" and self.token.text == text:
            self.index += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.take(text):
            found = repr(self.token.text) if self.token.kind != "end" else "the end"
            raise self.fail(f"expected {text!r} but found {found}")

    def parse(self) -> Node:
        if self.token.kind == "end":
            raise self.fail("empty formula")
        tree = self.expr()
        if self.token.kind != "end":
            raise self.fail(f"unexpected {self.token.text!r}")
        return tree

    def nested(self, parse: Callable[[], Node]) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"nested more than {MAX_DEPTH} levels deep")
        try:
            return parse()
        finally:
            self.depth -= 1

    def expr(self) -> Node:
        node = self.term()
        while self.token.kind == "op" and self.token.text in ("+", "-"):
            op = self.token.text
            self.index += 1
            node = Binary(op, node, self.term())
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.token.kind == "op" and self.token.text in ("*", "/"):
            op = self.token.text
            self.index += 1
            node = Binary(op, node, self.unary())
        return node

    def unary(self) -> Node:
        if self.take("-"):
            return Negate(self.nested(self.unary))
        if self.take("+"):
            return self.nested(self.unary)
        return self.power()

    def power(self) -> Node:
        base = self.atom()
        if self.take("^"):
            return Binary("^", base, self.nested(self.unary))
        return base

    def atom(self) -> Node:
        token = self.token
        if token.kind == "number":
            self.index += 1
            if not math.isfinite(float(token.text)):
                raise self.fail(f"number {token.text} is too large", token)
            return Number(float(token.text))
        if token.kind == "name":
            self.index += 1
            if self.token.kind == "op" and self.token.text == "(":
                return self.call(token)
            if token.text not in self.names:
                hint = f"{token.text}(...) is a function; " if token.text in FUNCTIONS else ""
                known = ", ".join(sorted(self.names)) or "none"
                raise self.fail(f"{hint}unknown name {token.text!r} (sub-graders: {known})", token)
            self.used.add(token.text)
            return Name(token.text)
        if self.take("("):
            node = self.nested(self.expr)
            self.expect(")")
            return node
        found = repr(token.text) if token.kind != "end" else "the end"
        raise self.fail(f"expected a number, a name or '(' but found {found}")

    def call(self, name: _Token) -> Node:
        if name.text not in FUNCTIONS:
            raise self.fail(
                f"unknown function {name.text!r} (functions: {', '.join(FUNCTIONS)})", name
            )
        self.expect("(")
        args = [self.nested(self.expr)]
        while self.take(","):
            args.append(self.nested(self.expr))
        self.expect(")")
        arity = FUNCTIONS[name.text][1]
        if arity is not None and len(args) != arity:
            raise self.fail(f"{name.text}() takes {arity} argument(s), got {len(args)}", name)
        return Call(name.text, tuple(args))


def _located(message: str, source: str, column: int) -> str:
    """`message at column N in '...'`, quoting at most 30 characters either side."""
    start = max(0, column - 31)
    excerpt = source[start : column + 29]
    before, after = ("..." if start > 0 else ""), ("..." if column + 29 < len(source) else "")
    return f"{message} at column {column} in {before}{excerpt!r}{after}"


def _evaluate(node: Node, values: Mapping[str, float]) -> float:
    if isinstance(node, Number):
        return node.value
    if isinstance(node, Name):
        return float(values[node.name])
    if isinstance(node, Negate):
        return -_evaluate(node.operand, values)
    if isinstance(node, Call):
        function, _arity = FUNCTIONS[node.function]
        return float(function(*(_evaluate(a, values) for a in node.args)))
    left, right = _evaluate(node.left, values), _evaluate(node.right, values)
    if node.op == "+":
        return left + right
    if node.op == "-":
        return left - right
    if node.op == "*":
        return left * right
    if node.op == "/":
        return left / right
    return math.pow(left, right)


def _math_message(exc: Exception) -> str:
    if isinstance(exc, ZeroDivisionError):
        return "division by zero"
    if isinstance(exc, OverflowError):
        return "a result is too large (overflow)"
    return (
        f"math domain error ({exc}): log of a number <= 0, sqrt of a negative number, a "
        "negative number to a fractional power or 0 to a negative power"
    )
