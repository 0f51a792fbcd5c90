"""R's term algebra (``a*b``, ``(a+b)^2``, ``a/b``, ``- 1``) on expression trees, through formulae.

formulae expands the operators, and nothing else: every variable of the formula (a
column, ``log(x + 1)``, ``I(Days * (Days + 1))``, ``x > 2``) is handed to it as a
placeholder identifier, so formulae never sees, evaluates or re-prints a variable's text,
and each variable keeps its own tree (inner parentheses included).  The expanded terms
come back as tuples of those trees, with R's orderings: the variables of an interaction
in order of their first appearance in the formula (R names ``temp + recipe:temp``'s
interaction ``temp:recipe``), and the terms by degree, stably.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from bayesmix.errors import FormulaError
from bayesmix.spec.rexpr import Binary, Name, Node, Num, Paren, Unary, parse

# The operators of R's formula language; any other expression is a variable.
_FORMULA_OPERATORS = {"+", "-", "*", ":", "/", "^", "%in%"}


@dataclass(frozen=True)
class TermExpansion:
    """The expanded right-hand side: whether it has an intercept, and its terms in R's order."""

    intercept: bool
    terms: tuple[tuple[Node, ...], ...]

    def labels(self) -> list[str]:
        """R's ``attr(terms(f), "term.labels")``."""
        return [":".join(v.deparse() for v in term) for term in self.terms]


def expand_terms(rhs: str | Node) -> TermExpansion:
    """Expand a right-hand side as R's ``terms()`` does."""
    node = parse(rhs) if isinstance(rhs, str) else rhs
    variables: dict[str, Node] = {}  # placeholder -> variable, in order of first appearance
    text = _for_formulae(node, variables)
    try:
        intercept, expanded = _expanded_placeholders(text)
    except Exception as exc:
        raise FormulaError(f"cannot expand the terms {node.deparse()!r}: {exc}") from exc
    order = {placeholder: i for i, placeholder in enumerate(variables)}
    seen: set[frozenset[str]] = set()
    terms: list[tuple[Node, ...]] = []
    for names in expanded:
        names = sorted(names, key=order.__getitem__)
        if frozenset(names) in seen:  # a:b and b:a are one term
            continue
        seen.add(frozenset(names))
        terms.append(tuple(variables[n] for n in names))
    terms.sort(key=len)  # R orders terms by degree, keeping the order within a degree
    return TermExpansion(intercept, tuple(terms))


@lru_cache(maxsize=512)
def _expanded_placeholders(text: str) -> tuple[bool, tuple[tuple[str, ...], ...]]:
    """formulae's expansion of a placeholder formula: (intercept?, each term's placeholders).

    A pure function of the text, which holds only operators and placeholders (``zzv0zz +
    zzv1zz``), so few texts recur across formulas: kept, because formulae's model
    description cost ~0.25 ms a call and a formula needs several (a third of compiling
    a small model such as Pixel's).
    """
    from formulae import model_description

    description = model_description("zzresponsezz ~ " + text)
    intercept = any(type(t).__name__ == "Intercept" for t in description.terms)
    terms = tuple(tuple(c.name for c in term.components) for term in description.terms
                  if type(term).__name__ == "Term")
    return intercept, terms


def _for_formulae(node: Node, variables: dict[str, Node]) -> str:
    """The formula text formulae parses: operators kept, each variable replaced by a placeholder."""
    if isinstance(node, Paren):
        inner = _for_formulae(node.inner, variables)
        return f"({inner})" if _is_operator(node.inner) else inner
    if isinstance(node, Binary) and node.op in _FORMULA_OPERATORS:
        left = _for_formulae(node.left, variables)
        if node.op == "^":
            power = _power(node.right)
            # R: a single variable to any power is the variable itself (formulae would log a hint)
            return f"{left}**{power}" if _is_operator(node.left) else left
        op = ":" if node.op == "%in%" else node.op  # R's a %in% b is the interaction a:b
        return f"{left} {op} {_for_formulae(node.right, variables)}"
    if isinstance(node, Binary) and node.op in ("|", "||"):
        raise FormulaError(f"a random-effects term {node.deparse()!r} cannot be part of the fixed-effects terms")
    if isinstance(node, Unary) and node.op in ("-", "+"):
        return f"{node.op}{_for_formulae(node.operand, variables)}"
    if isinstance(node, Num):
        if node.value not in (0.0, 1.0):
            raise FormulaError(f"the number {node.deparse()} is not a term; only 0 and 1 (the intercept) are")
        return str(int(node.value))
    if isinstance(node, Name) and node.name == ".":
        raise FormulaError("'.' (every other column) can only be expanded when the data are known")
    return _placeholder(node, variables)


def _is_operator(node: Node) -> bool:
    return isinstance(node, Binary) and node.op in _FORMULA_OPERATORS or isinstance(node, Unary | Paren)


def _power(node: Node) -> str:
    inner = node.inner if isinstance(node, Paren) else node
    if not isinstance(inner, Num) or not inner.value.is_integer() or inner.value < 1:
        raise FormulaError(f"the power in a formula must be a whole number, got {node.deparse()!r}")
    return str(int(inner.value))


def _placeholder(node: Node, variables: dict[str, Node]) -> str:
    key = node.deparse()
    for placeholder, known in variables.items():
        if known.deparse() == key:
            return placeholder
    placeholder = f"zzv{len(variables)}zz"
    variables[placeholder] = node
    return placeholder
