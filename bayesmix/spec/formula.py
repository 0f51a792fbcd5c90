"""lme4 formula syntax: split a formula into response, fixed part, random terms and offsets.

The text is parsed once into an R syntax tree (:mod:`bayesmix.spec.rexpr`, never Python's
``eval``); lme4's rules are applied to the tree: ``findbars``/``nobars`` (a bar term
anywhere, also the bare top-level ``y ~ x + 1 | g``), ``expandDoubleVerts`` (``(x || g)``
as lme4 1.1-31 expands it, one ``(0 + term | g)`` per term of ``x``), ``expandSlash``
(``(1 | a/b)``), ``offset()`` terms, and ``.`` for the other columns.  Every piece is kept
as R's deparse of its tree, so names are R's and re-parsing gives the same tree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from bayesmix.errors import FormulaError, warn
from bayesmix.spec.rexpr import (
    Binary,
    Call,
    Name,
    Node,
    Num,
    Paren,
    Unary,
    parse,
    parse_with_comments,
    value_names,
)
from bayesmix.spec.termalgebra import expand_terms

__all__ = ["FormulaError", "ParsedFormula", "RandomTermSpec", "cbind_arguments", "parse_formula"]

_BARS = ("|", "||")


@dataclass(frozen=True)
class RandomTermSpec:
    """One ``(expr | group)`` term after lme4's expansions of ``||`` and ``/``."""

    expr: str  # the left of the bar, e.g. "1", "Days", "0 + Days"
    group: str  # the grouping factor, e.g. "Subject", "cask:batch"

    def __str__(self) -> str:
        return f"({self.expr} | {self.group})"


@dataclass(frozen=True)
class ParsedFormula:
    """A formula split the way lme4's ``lFormula`` splits it."""

    response: str
    fixed: str  # right-hand side without random terms and offsets ("1" if nothing else)
    random: tuple[RandomTermSpec, ...]
    offsets: tuple[str, ...] = ()
    display: str = ""  # the formula as lme4 prints it after expanding ``||``
    fixed_terms_text: tuple[str, ...] = field(default=())


def parse_formula(text: str, columns: Iterable[str] | None = None) -> ParsedFormula:
    """Split an lme4 formula: ``response ~ fixed + (expr | group) + offset(x)``.

    ``columns`` (the data's column names) lets ``.`` stand for every column not in the response.
    """
    if not isinstance(text, str) or "~" not in text:
        raise FormulaError(f"a formula needs a response and '~', got {text!r}")
    tree, comments = parse_with_comments(text)
    lhs, written = _sides(tree, text)
    shown = _expand_double_bars(written)  # lme4 prints the formula with '||' expanded, '.' as written
    rhs = shown if columns is None else _expand_dot(shown, lhs, [str(c) for c in columns])
    bars = _find_bars(rhs, text)
    if not bars:
        raise FormulaError(_no_random_terms_message(text, comments))
    fixed_part = _no_bars(rhs)
    pieces = [] if fixed_part is None else _additive_pieces(fixed_part)
    offsets = [p for s, p in pieces if _is_offset(p)]
    fixed_pieces = [(s, p) for s, p in pieces if not _is_offset(p)]
    fixed = _join(fixed_pieces)
    return ParsedFormula(
        response=lhs.deparse(),
        fixed=fixed.deparse() if fixed is not None else "1",
        random=tuple(term for bar in bars for term in _bar_terms(bar)),
        offsets=tuple(_offset_argument(p) for p in offsets),
        display=f"{lhs.deparse()} ~ {shown.deparse()}",
        fixed_terms_text=tuple(p.deparse() for _, p in fixed_pieces),
    )


def _sides(tree: Node, text: str) -> tuple[Node, Node]:
    if isinstance(tree, Unary) and tree.op == "~":
        raise FormulaError(f"the formula has no response on the left of '~': {text!r}")
    if not (isinstance(tree, Binary) and tree.op == "~"):
        raise FormulaError(f"a formula needs a response and '~' at the top, got {text!r}")
    for side in (tree.left, tree.right):
        if any(isinstance(n, Binary | Unary) and n.op == "~" for n in side.walk()):
            raise FormulaError(f"a formula has a single '~'; {text!r} has a second one")
    return tree.left, tree.right


def _no_random_terms_message(text: str, comments: list[str]) -> str:
    message = (
        f"no random-effects terms in {text.strip()!r}: a mixed model needs at least one "
        "term like (1 | group); for a model without random effects use an ordinary regression"
    )
    if comments:
        message += f" (note: '#' starts an R comment, and {comments[0]!r} was ignored)"
    return message


# --- lme4's expansions -----------------------------------------------------------------------


def _expand_dot(rhs: Node, lhs: Node, columns: list[str]) -> Node:
    """R's ``.``: every column not used in the response, in the data's order."""
    others = [c for c in columns if c not in set(value_names(lhs))]
    if not any(isinstance(n, Name) and n.name == "." for n in rhs.walk()):
        return rhs
    if not others:
        raise FormulaError("'.' stands for the columns other than the response, and the data have none")
    expansion = Paren(_sum([Name(c) for c in others]))
    return _replace(rhs, lambda n: expansion if isinstance(n, Name) and n.name == "." else None)


def _expand_double_bars(node: Node) -> Node:
    """lme4's ``expandDoubleVerts``: ``(x || g)`` -> ``(1 | g) + (0 + x | g)``, one term per term of x."""

    def expand(n: Node) -> Node | None:
        if not (isinstance(n, Binary) and n.op == "||"):
            return None
        expansion = expand_terms(n.left)
        group = n.right
        pieces = [Binary("|", Num(1.0), group)] if expansion.intercept else []
        pieces += [Binary("|", Binary("+", Num(0.0), _interaction(term)), group) for term in expansion.terms]
        if not pieces:
            raise FormulaError(f"{n.deparse()!r} has no terms left of '||'")
        return _sum([Paren(p) for p in pieces])

    return _replace(node, expand)


def _interaction(term: tuple[Node, ...]) -> Node:
    out = term[0]
    for variable in term[1:]:
        out = Binary(":", out, variable)
    return out


def _find_bars(node: Node, text: str) -> list[Binary]:
    """lme4's ``findbars``, with the misuses lme4 accepts silently named.

    ``joint`` is the nearest operator other than ``+`` above the current node (None at the
    additive top level): a bar term under ``-`` is refused, under ``*`` or ``:`` it is read
    as lme4 reads it (as if joined by ``+``), with a warning that it does not interact.
    """
    bars: list[Binary] = []

    def visit(n: Node, joint: Binary | Unary | None) -> None:
        if isinstance(n, Binary) and n.op in _BARS:
            if joint is not None and joint.op == "-":
                raise FormulaError(f"cannot subtract a random-effects term: {n.deparse()}")
            if joint is not None:
                _warn_not_additive(n, joint)
            bars.append(n)
        elif isinstance(n, Paren):
            visit(n.inner, joint)
        elif isinstance(n, Binary):
            visit(n.left, joint if n.op in ("+", "-") else joint or n)
            visit(n.right, n if n.op == "-" else joint if n.op == "+" else joint or n)
        elif isinstance(n, Unary):
            visit(n.operand, n if n.op == "-" else joint)
        elif isinstance(n, Call) and any(_has_bar(a.value) for a in n.args):
            raise FormulaError(f"a random-effects term cannot be inside {n.func}(): {n.deparse()} in {text!r}")

    visit(node, None)
    return bars


def _warn_not_additive(bar: Binary, joint: Binary | Unary) -> None:
    others = [side for side in joint.children() if not _has_bar(side)]
    slope = others[0].deparse() if others else "x"
    warn(
        f"{joint.deparse()!r}: lme4 reads a random-effects term joined by {joint.op!r} as if joined by '+', "
        f"so ({bar.deparse()}) does not interact with {slope}; for random slopes write "
        f"({slope} | {bar.right.deparse()})"
    )


def _has_bar(node: Node) -> bool:
    return any(isinstance(n, Binary) and n.op in _BARS for n in node.walk())


def _no_bars(node: Node) -> Node | None:
    """lme4's ``nobars``: the formula without its bar terms (an operator losing a side becomes the other side)."""
    if isinstance(node, Binary) and node.op in _BARS:
        return None
    if isinstance(node, Paren):
        inner = _no_bars(node.inner)
        return None if inner is None else Paren(inner)
    if isinstance(node, Unary):
        operand = _no_bars(node.operand)
        return None if operand is None else Unary(node.op, operand)
    if isinstance(node, Binary):
        left, right = _no_bars(node.left), _no_bars(node.right)
        if left is None or right is None:
            return left if right is None else right
        return Binary(node.op, left, right)
    return node


def _bar_terms(bar: Binary) -> list[RandomTermSpec]:
    """One bar term, with lme4's ``expandSlash``: ``a/b/c`` -> groups ``a``, ``b:a``, ``c:b:a``."""
    if any(isinstance(n, Name) and n.name == "." for n in bar.walk()):
        raise FormulaError(f"'.' can only stand for the other columns in the fixed part, not in ({bar.deparse()})")
    expr = bar.left.deparse()
    parts = _slash_parts(bar.right)
    return [RandomTermSpec(expr, ":".join(p.deparse() for p in reversed(parts[: i + 1]))) for i in range(len(parts))]


def _slash_parts(group: Node) -> list[Node]:
    inner = group.inner if isinstance(group, Paren) else group
    if isinstance(inner, Binary) and inner.op == "/":
        return _slash_parts(inner.left) + [inner.right]
    return [group]


# --- the fixed part --------------------------------------------------------------------------


def _additive_pieces(node: Node) -> list[tuple[str, Node]]:
    """The top-level ``+``/``-`` pieces of ``node`` as (sign, piece)."""
    if isinstance(node, Binary) and node.op in ("+", "-"):
        right = [(node.op, node.right)]
        return _additive_pieces(node.left) + right
    if isinstance(node, Unary) and node.op in ("+", "-"):
        return [(node.op, node.operand)]
    return [("+", node)]


def _join(pieces: list[tuple[str, Node]]) -> Node | None:
    out: Node | None = None
    for sign, piece in pieces:
        if out is None:
            out = piece if sign == "+" else Unary("-", piece)
        else:
            out = Binary(sign, out, piece)
    return out


def _sum(nodes: list[Node]) -> Node:
    return _join([("+", n) for n in nodes])


def _is_offset(node: Node) -> bool:
    return isinstance(node, Call) and node.func == "offset"


def _offset_argument(node: Call) -> str:
    if len(node.args) != 1 or node.args[0].name not in (None, "object"):
        raise FormulaError(f"offset() takes one expression, got {node.deparse()}")
    return node.args[0].value.deparse()


def _replace(node: Node, change) -> Node:
    """A copy of ``node`` where ``change(n)``, when not None, replaces the subtree ``n``."""
    new = change(node)
    if new is not None:
        return new
    if isinstance(node, Paren):
        return Paren(_replace(node.inner, change))
    if isinstance(node, Unary):
        return Unary(node.op, _replace(node.operand, change))
    if isinstance(node, Binary):
        return Binary(node.op, _replace(node.left, change), _replace(node.right, change))
    return node


def cbind_arguments(response: str) -> tuple[str, str] | None:
    """The two expressions of ``cbind(successes, failures)``, or None for another response."""
    node = parse(response)
    if not (isinstance(node, Call) and node.func == "cbind"):
        return None
    if len(node.args) != 2:
        raise FormulaError(f"cbind() in the response needs exactly two columns, got {len(node.args)}: {response}")
    return node.args[0].value.deparse(), node.args[1].value.deparse()
