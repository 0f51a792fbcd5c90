"""lme4 formula syntax: split a formula into response, fixed part, random terms and offsets.

formulae parses the fixed part (see :mod:`bayesmix.spec.design`); what it cannot parse is
handled here: ``(x || g)``, ``(1 | a/b)``, ``cbind()`` responses and ``offset()``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bayesmix.errors import FormulaError


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


def parse_formula(text: str) -> ParsedFormula:
    """Split an lme4 formula: ``response ~ fixed + (expr | group) + offset(x)``."""
    if not isinstance(text, str) or "~" not in text:
        raise FormulaError(f"a formula needs a response and '~', got {text!r}")
    lhs, rhs = text.split("~", 1)
    lhs, rhs = lhs.strip(), rhs.strip()
    if not lhs:
        raise FormulaError("the formula has no response on the left of '~'")
    if not rhs:
        raise FormulaError("the formula has nothing on the right of '~'")
    _check_balanced(text)

    fixed_parts: list[str] = []
    random: list[RandomTermSpec] = []
    offsets: list[str] = []
    display_parts: list[str] = []
    for sign, piece in _split_top_level(rhs):
        inner = _strip_outer_parens(piece)
        if inner is not None and _top_level_bar(inner) is not None:
            if sign == "-":
                raise FormulaError(f"cannot subtract a random-effects term: {piece}")
            terms, shown = _expand_bar_term(inner)
            random.extend(terms)
            display_parts.append(("+", shown))
            continue
        if piece.startswith("offset(") and _matching_paren(piece, len("offset")) == len(piece) - 1:
            offsets.append(piece[len("offset(") : -1].strip())
            display_parts.append((sign, piece))
            continue
        fixed_parts.append((sign, piece))
        display_parts.append((sign, piece))

    if not random:
        raise FormulaError(
            f"no random-effects terms in {text.strip()!r}: a mixed model needs at least one "
            "term like (1 | group); for a model without random effects use an ordinary regression"
        )
    fixed = _join_terms(fixed_parts) or "1"
    if fixed.startswith("-"):
        fixed = "1 " + fixed
    return ParsedFormula(
        response=lhs,
        fixed=fixed,
        random=tuple(random),
        offsets=tuple(offsets),
        display=deparse(lhs) + " ~ " + deparse(_join_terms(display_parts)),
        fixed_terms_text=tuple(p for _, p in fixed_parts),
    )


def _expand_bar_term(inner: str) -> tuple[list[RandomTermSpec], str]:
    """Expand ``expr || g`` into independent terms and ``g1/g2`` into nested ones, as lme4 does."""
    pos, width = _top_level_bar(inner)
    expr, group = inner[:pos].strip(), inner[pos + width :].strip()
    if not expr:
        raise FormulaError(f"random term ({inner}) has nothing left of the bar")
    if not group:
        raise FormulaError(f"random term ({inner}) has no grouping factor right of the bar")
    groups = _expand_slash(group)
    if width == 1:
        terms = [RandomTermSpec(deparse(expr), g) for g in groups]
        shown = "(" + deparse(expr) + " | " + deparse(group) + ")"
        return terms, shown
    # (x || g): an intercept term (unless suppressed) and one term per other column.
    pieces = [p for s, p in _split_top_level(expr) if s == "+"]
    removed = {p for s, p in _split_top_level(expr) if s == "-"}
    has_intercept = "0" not in pieces and "1" not in removed and "-1" not in pieces
    slopes = [p for p in pieces if p not in ("0", "1")]
    exprs = (["1"] if has_intercept else []) + [f"0 + {deparse(p)}" for p in slopes]
    terms = [RandomTermSpec(e, g) for g in groups for e in exprs]
    shown = "(" + " + ".join(f"({e} | {deparse(group)})" for e in exprs) + ")"
    return terms, shown


def _expand_slash(group: str) -> list[str]:
    """``a/b/c`` -> ``a``, ``b:a``, ``c:b:a`` (lme4's expandSlash naming)."""
    parts = [p.strip() for p in group.split("/")]
    if any(not p for p in parts):
        raise FormulaError(f"malformed nested grouping {group!r}")
    out = []
    for i in range(len(parts)):
        out.append(":".join(reversed(parts[: i + 1])))
    return [deparse(g) for g in out]


def cbind_arguments(response: str) -> tuple[str, str] | None:
    """The two expressions of ``cbind(successes, failures)``, or None for another response."""
    text = response.strip()
    if not (text.startswith("cbind(") and _matching_paren(text, len("cbind")) == len(text) - 1):
        return None
    args = _split_args(text[len("cbind(") : -1])
    if len(args) != 2:
        raise FormulaError(f"cbind() in the response needs exactly two columns, got {len(args)}: {text}")
    return args[0], args[1]


# --- small text utilities -------------------------------------------------------------------


def _check_balanced(text: str) -> None:
    depth = 0
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            raise FormulaError(f"unbalanced parentheses in {text!r}")
    if depth:
        raise FormulaError(f"unbalanced parentheses in {text!r}")


def _split_top_level(text: str) -> list[tuple[str, str]]:
    """Split on top-level ``+``/``-`` into (sign, piece) pairs."""
    out, depth, start, sign = [], 0, 0, "+"
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and ch in "+-" and not _is_exponent_sign(text, i):
            piece = text[start:i].strip()
            if piece:
                out.append((sign, piece))
            sign, start = ch, i + 1
    piece = text[start:].strip()
    if piece:
        out.append((sign, piece))
    return out


def _is_exponent_sign(text: str, i: int) -> bool:
    """True for the sign in a number like 1e-5."""
    return i >= 2 and text[i - 1] in "eE" and text[i - 2].isdigit() and i + 1 < len(text) and text[i + 1].isdigit()


def _split_args(text: str) -> list[str]:
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            out.append(text[start:i].strip())
            start = i + 1
    out.append(text[start:].strip())
    return out


def _strip_outer_parens(piece: str) -> str | None:
    if piece.startswith("(") and _matching_paren(piece, 0) == len(piece) - 1:
        return piece[1:-1].strip()
    return None


def _matching_paren(text: str, open_pos: int) -> int:
    depth = 0
    for i in range(open_pos, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _top_level_bar(text: str) -> tuple[int, int] | None:
    """Position and width (1 for ``|``, 2 for ``||``) of the top-level bar, if any."""
    depth = 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and ch == "|":
            return (i, 2) if text[i + 1 : i + 2] == "|" else (i, 1)
    return None


def _join_terms(parts: list[tuple[str, str]]) -> str:
    out = ""
    for sign, piece in parts:
        if not out:
            out = piece if sign == "+" else f"-{piece}"
        else:
            out += f" {sign} {piece}"
    return out


_TOKEN = re.compile(r"\s*(\d+\.?\d*(?:[eE][-+]?\d+)?|[A-Za-z_.][A-Za-z0-9_.]*|`[^`]*`|\*\*|\|\||%[^%]*%|\S)")
_SPACED = {"+", "-", "*", "~", "|", "||", "==", "!=", "<", ">", "<=", ">=", "&"}


def deparse(text: str) -> str:
    """Re-space an expression the way R's ``deparse`` prints formulas.

    Spaces around ``+ - * ~ |``; none around ``/ : ^``; ``, `` after commas.
    """
    tokens = _TOKEN.findall(text)
    out = ""
    prev = None
    for tok in tokens:
        tok = tok.strip()
        if tok == "**":
            tok = "^"
        if tok in _SPACED and not (tok == "-" and (prev is None or prev in _SPACED or prev in "(,")):
            out = out.rstrip() + f" {tok} "
        elif tok == ",":
            out = out.rstrip() + ", "
        elif tok in ("/", ":", "^"):
            out = out.rstrip() + tok
        else:
            out += tok
        prev = tok
    return out.strip()
