"""R expressions as a syntax tree: tokenizer, parser with R's grammar, and R's ``deparse``.

Formula text is read here and nowhere else, and it is never handed to Python's
``eval``/``exec``/``compile``: the text becomes a small tree of :class:`Node` objects whose
only meaning is the one :mod:`bayesmix.spec.reval` gives them.  The grammar is R's
(``?Syntax``), restricted to what a model formula needs: numbers, strings, names
(backtick-quoted or as R allows them, non-ASCII letters included), calls of a named
function, parentheses, and the unary and binary operators below.  Everything else R or
Python would accept (``$``, ``@``, ``[``, ``{``, ``<-``, ``::``, ``;``, ``function``,
``lambda``, names starting with ``_``...) is refused with a :class:`FormulaError` that
names the construct.

:meth:`Node.deparse` prints a tree as R's ``deparse`` does, which is how R names
model-matrix columns (``I(Days * (Days + 1))``, ``I(x/2)``, ``poly(x, 2)``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from bayesmix.errors import FormulaError
from bayesmix.rformat import DEPARSE_CUTOFF, r_format_number

# --- tokens ----------------------------------------------------------------------------------

# Operators R has but formulas must not use, with what they are, for the error message.
_REFUSED_OPERATORS = {
    ";": "';' separates R statements; a formula is a single expression",
    "$": "'$' (element access) is not allowed in a formula",
    "@": "'@' (slot access) is not allowed in a formula",
    "[": "'[' (subscripting) is not allowed in a formula",
    "]": "']' (subscripting) is not allowed in a formula",
    "{": "'{' (a code block) is not allowed in a formula",
    "}": "'}' (a code block) is not allowed in a formula",
    "<-": "'<-' (assignment) is not allowed in a formula",
    "<<-": "'<<-' (assignment) is not allowed in a formula",
    "->": "'->' (assignment) is not allowed in a formula",
    "->>": "'->>' (assignment) is not allowed in a formula",
    "::": "'::' (namespace access) is not allowed in a formula",
    ":::": "':::' (namespace access) is not allowed in a formula",
    "|>": "'|>' (the pipe) is not allowed in a formula",
    "?": "'?' (help) is not allowed in a formula",
    "\\": "'\\' (a lambda) is not allowed in a formula",
}
_OPERATORS = sorted(
    ["+", "-", "*", "/", "^", "**", "<", ">", "<=", ">=", "==", "!=", "!", "&", "&&", "|", "||", "~", ":",
     "(", ")", ",", "=", *_REFUSED_OPERATORS],
    key=len,
    reverse=True,
)
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+L?|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[Li]?")
_PERCENT_OP = re.compile(r"%[^%\n]*%")
# R's reserved words: they are never names, so they are never column lookups.
RESERVED = frozenset(
    ["if", "else", "repeat", "while", "function", "for", "next", "break", "TRUE", "FALSE", "NULL", "Inf", "NaN", "NA", "NA_integer_", "NA_real_", "NA_character_", "NA_complex_", "in"]
)
_LITERALS = {"TRUE": True, "FALSE": False, "NA": float("nan"), "NaN": float("nan"), "Inf": float("inf"), "NULL": None}
# Python keywords that would make a formula look like code; refused unless they are columns.
PYTHON_KEYWORDS = frozenset(
    ["lambda", "import", "def", "class", "return", "yield", "global", "nonlocal", "del", "assert", "raise", "try", "except", "finally", "with", "as", "pass", "is", "not", "and", "or", "async", "await", "exec", "eval"]
)


@dataclass(frozen=True)
class Token:
    kind: str  # "num", "str", "name", "op", "end"
    text: str  # the token as written (names: unquoted; strings: the value)
    pos: int
    quoted: bool = False  # a backtick-quoted name


def tokenize(text: str, comments: list[str] | None = None) -> list[Token]:
    """Split R source into tokens; ``#`` starts a comment that runs to the end of the line.

    The comments are appended to ``comments`` when given (messages mention what they hid).
    """
    tokens, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == "#":
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            if comments is not None:
                comments.append(text[i:end])
            i = end
        elif ch in "'\"":
            value, i_next = _read_string(text, i)
            tokens.append(Token("str", value, i))
            i = i_next
        elif ch == "`":
            end = text.find("`", i + 1)
            if end < 0:
                raise FormulaError(f"unterminated backtick name at position {i} in {text!r}")
            tokens.append(Token("name", text[i + 1 : end], i, quoted=True))
            i = end + 1
        elif ch.isdigit() or (ch == "." and text[i + 1 : i + 2].isdigit()):
            tokens.append(_read_number(text, i))
            i += len(tokens[-1].text)
        elif ch.isalpha() or ch == "." or ch == "_":
            name = _read_name(text, i)
            tokens.append(Token("name", name, i))
            i += len(name)
        elif ch == "%":
            match = _PERCENT_OP.match(text, i)
            if not match:
                raise FormulaError(f"unterminated %-operator at position {i} in {text!r}")
            tokens.append(Token("op", match.group(0), i))
            i = match.end()
        else:
            op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
            if op is None:
                raise FormulaError(f"unexpected character {ch!r} at position {i} in {text!r}")
            if op in _REFUSED_OPERATORS:
                raise FormulaError(f"{_REFUSED_OPERATORS[op]} (at position {i} in {text!r})")
            tokens.append(Token("op", "^" if op == "**" else op, i))  # R reads ** as ^
            i += len(op)
    tokens.append(Token("end", "", len(text)))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    quote, out, i = text[start], [], start + 1
    escapes = {"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"', "0": "\0"}
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch == "\\" and i + 1 < len(text):
            out.append(escapes.get(text[i + 1], text[i + 1]))
            i += 2
            continue
        out.append(ch)
        i += 1
    raise FormulaError(f"unterminated string starting at position {start} in {text!r}")


def _read_number(text: str, start: int) -> Token:
    match = _NUMBER.match(text, start)
    literal = match.group(0)
    if literal.endswith("i"):
        raise FormulaError(f"complex numbers ({literal}) are not supported in a formula")
    after = text[match.end() : match.end() + 1]
    if after and (after.isalpha() or after in "._"):
        raise FormulaError(f"unexpected symbol after the number {literal!r} at position {start} in {text!r}")
    return Token("num", literal, start)


def _read_name(text: str, start: int) -> str:
    i = start
    while i < len(text) and (text[i].isalnum() or text[i] in "._"):
        i += 1
    name = text[start:i]
    if name.startswith("_"):
        raise FormulaError(
            f"{name!r} at position {start} is not an R name (names cannot start with '_'); "
            "quote a column with such a name in backticks"
        )
    return name


# --- the syntax tree -------------------------------------------------------------------------

# R's deparse puts no spaces around these binary operators (PP_BINARY2 in R's names.c).
_TIGHT_OPERATORS = frozenset({"/", "^", ":", "%%", "%/%"})
_SYNTACTIC_NAME = re.compile(r"^(?:[^\W\d_]|\.(?![\d]))[\w.]*$|^\.$")


def is_syntactic_name(name: str) -> bool:
    """Whether R prints ``name`` without backticks (R's ``make.names(name) == name``)."""
    return bool(_SYNTACTIC_NAME.match(name)) and name not in RESERVED and "\n" not in name


class Node:
    """A node of an R expression tree."""

    def deparse(self) -> str:
        raise NotImplementedError

    def children(self) -> tuple[Node, ...]:
        return ()

    def walk(self):
        """This node and every node below it, parents first."""
        yield self
        for child in self.children():
            yield from child.walk()

    def __str__(self) -> str:
        return self.deparse()


@dataclass(frozen=True)
class Num(Node):
    value: float
    integer: bool = False  # written with an L suffix

    def deparse(self) -> str:
        if self.integer:
            return f"{int(self.value)}L"
        return r_format_number(self.value, digits=15)


@dataclass(frozen=True)
class Str(Node):
    value: str

    def deparse(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return f'"{escaped}"'


@dataclass(frozen=True)
class Literal(Node):
    """``TRUE``, ``FALSE``, ``NA``, ``NaN``, ``Inf``, ``NULL``: reserved words, never names."""

    word: str

    @property
    def value(self):
        return _LITERALS[self.word]

    def deparse(self) -> str:
        return self.word


@dataclass(frozen=True)
class Name(Node):
    name: str

    def deparse(self) -> str:
        return self.name if is_syntactic_name(self.name) else "`" + self.name.replace("`", "\\`") + "`"


@dataclass(frozen=True)
class Arg:
    """One argument of a call: ``value`` or ``name = value``."""

    name: str | None
    value: Node

    def deparse(self) -> str:
        if self.name is None:
            return self.value.deparse()
        label = self.name if is_syntactic_name(self.name) else f"`{self.name}`"
        return f"{label} = {self.value.deparse()}"


@dataclass(frozen=True)
class Call(Node):
    func: str
    args: tuple[Arg, ...]

    def children(self) -> tuple[Node, ...]:
        return tuple(a.value for a in self.args)

    def deparse(self) -> str:
        head = self.func if is_syntactic_name(self.func) else f"`{self.func}`"
        return head + "(" + ", ".join(a.deparse() for a in self.args) + ")"


@dataclass(frozen=True)
class Paren(Node):
    inner: Node

    def children(self) -> tuple[Node, ...]:
        return (self.inner,)

    def deparse(self) -> str:
        return "(" + self.inner.deparse() + ")"


@dataclass(frozen=True)
class Unary(Node):
    op: str  # "-", "+", "!", "~"
    operand: Node

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)

    def deparse(self) -> str:
        return self.op + self.operand.deparse()


@dataclass(frozen=True)
class Binary(Node):
    op: str
    left: Node
    right: Node

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)

    def deparse(self) -> str:
        if self.op in _TIGHT_OPERATORS:
            return f"{self.left.deparse()}{self.op}{self.right.deparse()}"
        return f"{self.left.deparse()} {self.op} {self.right.deparse()}"


# --- the parser ------------------------------------------------------------------------------

# Binary operators by precedence (R's ?Syntax, lowest first) and whether they associate right.
_BINARY_PRECEDENCE = {
    "~": 1,
    "|": 2, "||": 2,
    "&": 3, "&&": 3,
    # 4 is unary '!'
    "<": 5, ">": 5, "<=": 5, ">=": 5, "==": 5, "!=": 5,
    "+": 6, "-": 6,
    "*": 7, "/": 7,
    "%": 8,  # every %op%
    ":": 9,
    # 10 is unary minus and plus
    "^": 11,
}
_NOT_PRECEDENCE, _UNARY_MINUS_PRECEDENCE, _TILDE_PRECEDENCE = 4, 10, 1
_COMPARISONS = frozenset({"<", ">", "<=", ">=", "==", "!="})


def _precedence(token: Token) -> int | None:
    if token.kind != "op":
        return None
    if token.text.startswith("%"):
        return _BINARY_PRECEDENCE["%"]
    return _BINARY_PRECEDENCE.get(token.text)


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.comments: list[str] = []
        self.tokens = tokenize(text, self.comments)
        self.pos = 0
        self.check_balance()

    def check_balance(self) -> None:
        depth = 0
        for token in self.tokens:
            if token.kind == "op" and token.text in "()":
                depth += 1 if token.text == "(" else -1
            if depth < 0:
                break
        if depth:
            hidden = f" (a '#' starts a comment that hid: {self.comments[0]!r})" if self.comments else ""
            raise FormulaError(f"unbalanced parentheses in {self.text!r}{hidden}")

    @property
    def current(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def fail(self, message: str, token: Token | None = None) -> FormulaError:
        token = token or self.current
        return FormulaError(f"{message} at position {token.pos} in {self.text!r}")

    def expect(self, op: str) -> None:
        if self.current.kind != "op" or self.current.text != op:
            found = "the end of the text" if self.current.kind == "end" else repr(self.current.text)
            raise self.fail(f"expected {op!r} but found {found}")
        self.advance()

    def parse_all(self) -> Node:
        if self.current.kind == "end":
            raise FormulaError(f"empty expression {self.text!r}")
        node = self.expression(0)
        if self.current.kind != "end":
            raise self.fail(f"unexpected {self.current.text!r} after a complete expression")
        return node

    def expression(self, min_precedence: int) -> Node:
        """Precedence climbing: an operand, then binary operators binding at least this tightly."""
        left = self.prefix()
        while True:
            token = self.current
            prec = _precedence(token)
            if prec is None or prec < min_precedence:
                return left
            self.advance()
            self.check_right_operand(token)
            if token.text == "^":  # right associative, and its right side may start with a sign
                right = self.prefix(_BINARY_PRECEDENCE["^"])
            else:
                right = self.expression(prec + 1)
            if token.text in _COMPARISONS and _precedence(self.current) == prec:
                raise self.fail(f"R does not chain comparisons ({token.text!r} then {self.current.text!r})")
            left = Binary(token.text, left, right)

    def check_right_operand(self, op: Token) -> None:
        """Name what is missing when a binary operator has nothing on its right."""
        token = self.current
        if not (token.kind == "end" or token.kind == "op" and token.text in (")", ",")):
            return
        if op.text == "~":
            raise FormulaError(f"the formula has nothing on the right of '~' in {self.text!r}")
        if op.text in ("|", "||"):
            raise self.fail(f"random term has no grouping factor right of the bar {op.text!r}")
        raise self.fail(f"nothing on the right of {op.text!r}")

    def prefix(self, power_floor: int = 0) -> Node:
        """A unary expression: signs and '!' and '~' apply to what binds more tightly than they do."""
        token = self.current
        if token.kind == "op" and token.text in ("-", "+"):
            self.advance()
            return Unary(token.text, self.expression(max(_UNARY_MINUS_PRECEDENCE, power_floor)))
        if token.kind == "op" and token.text == "!":
            self.advance()
            return Unary("!", self.expression(max(_NOT_PRECEDENCE + 1, power_floor)))
        if token.kind == "op" and token.text == "~":
            self.advance()
            return Unary("~", self.expression(_TILDE_PRECEDENCE + 1))
        node = self.primary()
        if power_floor and self.current.kind == "op" and self.current.text == "^":
            self.advance()
            node = Binary("^", node, self.prefix(_BINARY_PRECEDENCE["^"]))
        return node

    def primary(self) -> Node:
        token = self.advance()
        if token.kind == "num":
            return _number(token.text)
        if token.kind == "str":
            return Str(token.text)
        if token.kind == "name":
            return self.name_or_call(token)
        if token.kind == "op" and token.text == "(":
            if self.current.kind == "op" and self.current.text == ")":
                raise self.fail("empty parentheses '()'", token)
            inner = self.expression(0)
            self.expect(")")
            node = Paren(inner)
            if self.current.kind == "op" and self.current.text == "(":
                raise self.fail("only a function name can be called; '(...)(...)' is not allowed")
            return node
        if token.kind == "end":
            raise self.fail("the expression ends where a value was expected", token)
        if token.kind == "op" and token.text in ("|", "||"):
            raise self.fail(f"random term has nothing left of the bar {token.text!r}", token)
        if token.kind == "op" and token.text == "/" and self.pos >= 2 and self.tokens[self.pos - 2].text == "/":
            raise self.fail("malformed nested grouping ('//'): '/' needs a factor on each side", token)
        raise self.fail(f"unexpected {token.text!r} where a value was expected", token)

    def name_or_call(self, token: Token) -> Node:
        if not token.quoted and token.text in _LITERALS:
            node = Literal(token.text)
        elif not token.quoted and token.text in RESERVED:
            raise self.fail(f"the R keyword {token.text!r} is not allowed in a formula", token)
        else:
            node = Name(token.text)
        if not (self.current.kind == "op" and self.current.text == "("):
            return node
        if isinstance(node, Literal):
            raise self.fail(f"{token.text} cannot be called", token)
        self.advance()
        call = Call(token.text, self.arguments())
        if self.current.kind == "op" and self.current.text == "(":
            raise self.fail("only a function name can be called; 'f(...)(...)' is not allowed")
        return call

    def arguments(self) -> tuple[Arg, ...]:
        args: list[Arg] = []
        if self.current.kind == "op" and self.current.text == ")":
            self.advance()
            return ()
        while True:
            args.append(self.argument())
            if self.current.kind == "op" and self.current.text == ",":
                self.advance()
                continue
            self.expect(")")
            return tuple(args)

    def argument(self) -> Arg:
        token, nxt = self.current, self.tokens[self.pos + 1]
        if token.kind in ("name", "str") and nxt.kind == "op" and nxt.text == "=":
            self.pos += 2
            return Arg(token.text, self.expression(0))
        if token.kind == "op" and token.text in (",", ")"):
            raise self.fail("empty argument in a call")
        return Arg(None, self.expression(0))


def _number(literal: str) -> Num:
    integer = literal.endswith("L")
    body = literal[:-1] if integer else literal
    value = float(int(body, 16)) if body[:2].lower() == "0x" else float(body)
    return Num(value, integer=integer and value.is_integer())


def parse(text: str) -> Node:
    """Parse R source text (one expression) into a tree; a :class:`FormulaError` names what is wrong."""
    if not isinstance(text, str):
        raise FormulaError(f"an R expression must be a string, got {type(text).__name__}")
    return _parsed(text)


@lru_cache(maxsize=2048)
def _parsed(text: str) -> Node:
    """One tree per text: the trees are immutable, and a fit parses the same few texts a dozen times
    (tokenizing them was a fifth of a small model's compile)."""
    return parse_with_comments(text)[0]


def parse_with_comments(text: str) -> tuple[Node, list[str]]:
    """The tree and the comments the text held (they are not part of the tree)."""
    if not isinstance(text, str):
        raise FormulaError(f"an R expression must be a string, got {type(text).__name__}")
    parser = _Parser(text)
    return parser.parse_all(), parser.comments


def value_names(node: Node) -> list[str]:
    """The names used as values in ``node`` (not function names), in order of first appearance."""
    out: list[str] = []
    for sub in node.walk():
        if isinstance(sub, Name) and sub.name not in out:
            out.append(sub.name)
    return out


# --- R's deparse() line breaking (the "Formula:" line of a summary) ---------------------------------


def deparse_lines(text: str, cutoff: int = DEPARSE_CUTOFF) -> list[str]:
    """An R expression split into ``deparse()``'s lines: after a spaced binary operator or an
    argument's comma, a line longer than ``cutoff`` is ended and the rest indented."""
    try:
        tree = parse(text)
    except FormulaError:
        return [text]  # not something we can parse: one line, as written
    writer = _LineWriter(cutoff)
    writer.node(tree)
    writer.end_line()
    return writer.lines


class _LineWriter:
    """R's deparse2buff: the indent grows by four spaces (two past the fourth level) per open break."""

    def __init__(self, cutoff: int):
        self.cutoff = cutoff
        self.lines: list[str] = []
        self.line = ""
        self.indent = 0
        self.at_line_start = True

    def write(self, text: str) -> None:
        if self.at_line_start:
            self.at_line_start = False
            self.line += "".join("    " if i <= 4 else "  " for i in range(1, self.indent + 1))
        self.line += text

    def end_line(self) -> None:
        self.lines.append(self.line)
        self.line, self.at_line_start = "", True

    def maybe_break(self, broke: bool) -> bool:
        if len(self.line) > self.cutoff:
            if not broke:
                self.indent += 1
            self.end_line()
            return True
        return broke

    def node(self, n: Node) -> None:
        if isinstance(n, Paren):
            self.write("(")
            self.node(n.inner)
            self.write(")")
        elif isinstance(n, Unary):
            self.write(n.op)
            self.node(n.operand)
        elif isinstance(n, Call):
            self._call(n)
        elif isinstance(n, Binary):
            self._binary(n)
        else:  # names and literals
            self.write(n.deparse())

    def _call(self, n: Call) -> None:
        self.write(n.func if is_syntactic_name(n.func) else f"`{n.func}`")
        self.write("(")
        broke = False
        for k, arg in enumerate(n.args):
            if arg.name is not None:
                self.write((arg.name if is_syntactic_name(arg.name) else f"`{arg.name}`") + " = ")
            self.node(arg.value)
            if k < len(n.args) - 1:
                self.write(", ")
                broke = self.maybe_break(broke)
        if broke:
            self.indent -= 1
        self.write(")")

    def _binary(self, n: Binary) -> None:
        self.node(n.left)
        if n.op in _TIGHT_OPERATORS:
            self.write(n.op)
            self.node(n.right)
            return
        self.write(f" {n.op} ")
        broke = self.maybe_break(False)
        self.node(n.right)
        if broke:
            self.indent -= 1
