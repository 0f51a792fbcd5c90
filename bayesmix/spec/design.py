"""Model matrices as R's ``model.matrix`` builds them, from terms parsed by formulae.

The terms come from :mod:`bayesmix.spec.termalgebra` (formulae expands the operators),
each variable is evaluated by :mod:`bayesmix.spec.reval` (never Python's ``eval``) and
named by R's deparse of its tree.  The columns are built here so that they follow R
exactly: the factor's own level order (first level = reference), treatment contrasts for
unordered and polynomial contrasts for ordered factors, R's rule for when a factor gets
full indicator coding, R's column order and names.  Factor levels come from the
model-frame state when new rows are evaluated, so new data get the training coding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bayesmix.errors import DataError, DataWarning, warn
from bayesmix.spec import rvalues as rv
from bayesmix.spec.reval import Evaluator, FrameState, recode_levels
from bayesmix.spec.rexpr import Call, Name, Node
from bayesmix.spec.termalgebra import expand_terms

__all__ = ["DataError", "Evaluator", "Factor", "FrameState", "ModelMatrix", "as_factor", "drop_rank_deficient",
           "factor_of", "is_categorical", "model_matrix", "unseen_levels"]


@dataclass(frozen=True)
class Factor:
    """A categorical variable as R stores it: integer codes into ordered level labels."""

    codes: np.ndarray  # int64, 0-based
    levels: tuple[str, ...]
    ordered: bool = False

    @property
    def nlevels(self) -> int:
        return len(self.levels)


# --- factors from evaluated values ----------------------------------------------------------


def is_categorical(values) -> bool:
    """Whether a value enters a model matrix as a factor (R codes logicals as factors too)."""
    return rv.is_categorical(values) or (isinstance(values, np.ndarray) and values.dtype == bool)


def as_factor(values, name: str) -> Factor:
    """R's ``factor()`` of an evaluated value, unused levels dropped (a model frame's factor)."""
    cat = rv.as_categorical(values).remove_unused_categories()
    return Factor(np.asarray(cat.codes, dtype=np.int64), tuple(cat.categories), bool(cat.ordered))


def factor_of(values, key: str, ev: Evaluator) -> Factor:
    """The factor of the variable ``key`` with the model frame's levels.

    Learning (the training data): the levels that occur, remembered in the model-frame
    state (R's ``xlevels``).  Applying (new rows): the training levels, in their order, then
    any new ones (which :func:`unseen_levels` reports).
    """
    cat = rv.as_categorical(values)
    if ev.learning:
        cat = cat.remove_unused_categories()
        ev.state.set_levels(key, cat.categories, cat.ordered)
    elif key in ev.state.levels:
        cat = recode_levels(cat, *ev.state.levels[key])
    return Factor(np.asarray(cat.codes, dtype=np.int64), tuple(cat.categories), bool(cat.ordered))


def unseen_levels(factor: Factor, key: str, ev: Evaluator) -> list[str]:
    """Levels of new rows that the training data did not have (none while learning)."""
    if ev.learning or key not in ev.state.levels:
        return []
    known = len(ev.state.levels[key][0])
    return [factor.levels[c] for c in np.unique(factor.codes[factor.codes >= known])]


# --- contrasts -----------------------------------------------------------------------------


def contr_treatment(levels: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    k = len(levels)
    return np.eye(k)[:, 1:], list(levels[1:])


def contr_poly(levels: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """R's ``contr.poly``: orthonormal polynomials in the level index, signs as R's QR gives."""
    k = len(levels)
    x = np.arange(1, k + 1, dtype=float)
    x -= x.mean()
    raw = np.vander(x, k, increasing=True)
    q, r = np.linalg.qr(raw)
    q = q * np.sign(np.diag(r))  # Gram-Schmidt orientation: each column agrees with its power
    names = [".L", ".Q", ".C"] + [f"^{i}" for i in range(4, k)]
    return q[:, 1:], names[: k - 1]


def contr_indicator(levels: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    return np.eye(len(levels)), list(levels)


# --- model matrix --------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelMatrix:
    """A dense model matrix with R's column names and each column's term."""

    matrix: np.ndarray
    names: list[str]
    term_of_column: list[str]
    has_intercept: bool


def model_matrix(rhs: str | Node, ev: Evaluator) -> ModelMatrix:
    """R's ``model.matrix(~ rhs, data)`` for the right-hand side of a formula."""
    expansion = expand_terms(rhs)
    n = ev.n
    columns: list[np.ndarray] = []
    names: list[str] = []
    owners: list[str] = []
    if expansion.intercept:
        columns.append(np.ones((n, 1)))
        names.append("(Intercept)")
        owners.append("(Intercept)")
    nodes = {v.deparse(): v for term in expansion.terms for v in term}
    values = {key: ev.evaluate(node) for key, node in nodes.items()}
    dummy_for_first_factor = not expansion.intercept
    previous: list[frozenset] = []
    for term in expansion.terms:
        blocks = []
        keys = [v.deparse() for v in term]
        for key in keys:
            # R's TermCode: a factor is coded by contrasts when the term without it is
            # contained in a preceding term (the empty margin always is); without an
            # intercept, the first factor of the first term holding one gets indicators.
            margin = frozenset(keys) - {key}
            by_contrasts = not margin or any(margin <= p for p in previous)
            if dummy_for_first_factor and is_categorical(values[key]):
                by_contrasts, dummy_for_first_factor = False, False
            blocks.append(_component_block(nodes[key], values[key], ev, by_contrasts))
        previous.append(frozenset(keys))
        mat, cols = _interact(blocks)
        columns.append(mat)
        names.extend(cols)
        owners.extend([":".join(keys)] * len(cols))
    matrix = np.hstack(columns) if columns else np.zeros((n, 0))
    return ModelMatrix(np.ascontiguousarray(matrix, dtype=float), names, owners, expansion.intercept)


def _component_block(node: Node, values, ev: Evaluator, coded_by_contrasts: bool) -> tuple[np.ndarray, list[str]]:
    key = node.deparse()
    if is_categorical(values):
        return _factor_block(key, values, ev, coded_by_contrasts)
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 2:
        return arr, [f"{key}{suffix}" for suffix in _matrix_suffixes(node, arr.shape[1])]
    return arr.reshape(ev.n, 1), [key]


def _factor_block(key: str, values, ev: Evaluator, coded_by_contrasts: bool) -> tuple[np.ndarray, list[str]]:
    factor = factor_of(values, key, ev)
    unseen = unseen_levels(factor, key, ev)
    if unseen:
        raise DataError(f"newdata column {key!r} has level(s) {', '.join(map(repr, unseen))} not seen in "
                        "fitting; the fixed effects have no coefficient for them")
    if factor.nlevels < 2 and coded_by_contrasts:
        raise DataError(f"the factor {key!r} has a single level ({factor.levels[0]!r}); contrasts need two or more")
    if coded_by_contrasts:
        contrast, suffixes = (contr_poly if factor.ordered else contr_treatment)(factor.levels)
    else:
        contrast, suffixes = contr_indicator(factor.levels)
    # a missing value (code -1) gives a row of NaN, as R's model frame with na.pass
    block = np.where(factor.codes[:, None] >= 0, contrast[np.maximum(factor.codes, 0)], np.nan)
    return block, [f"{key}{s}" for s in suffixes]


def _matrix_suffixes(node: Node, ncol: int) -> list[str]:
    """R's column names of a matrix variable: cbind(a, b) -> a, b; poly(x, 2) -> 1, 2."""
    symbols = isinstance(node, Call) and node.func == "cbind" and len(node.args) == ncol and all(
        isinstance(a.value, Name) and a.name is None for a in node.args)
    if symbols:
        return [a.value.name for a in node.args]
    return [str(j + 1) for j in range(ncol)]


def _interact(blocks: list[tuple[np.ndarray, list[str]]]) -> tuple[np.ndarray, list[str]]:
    """Row-wise products of the blocks' columns, the first block varying fastest (as R)."""
    mat, names = blocks[0]
    for nxt, nxt_names in blocks[1:]:
        mat = (mat[:, None, :] * nxt[:, :, None]).reshape(len(mat), -1)
        names = [f"{a}:{b}" for b in nxt_names for a in names]
    return mat, names


def drop_rank_deficient(X: np.ndarray, names: list[str], tol: float = 1e-7) -> tuple[np.ndarray, list[str], list[str]]:
    """Drop columns that are linear combinations of earlier ones, as lme4's ``chkRank.drop.cols``.

    R's LINPACK QR (dqrdc2) moves a column whose residual norm falls below ``tol`` times
    its original norm to the end; lme4 keeps the leading ``rank`` columns in order.
    """
    if X.shape[1] == 0:
        return X, names, []
    r = _full_rank_columns(X, tol)
    if r is None:
        _, r, _ = _rank_revealing(X, tol)
    keep = [j for j in range(X.shape[1]) if j in r]
    dropped = [names[j] for j in range(X.shape[1]) if j not in r]
    if dropped:
        warn(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
            f"column{'s' if len(dropped) > 1 else ''} / coefficient{'s' if len(dropped) > 1 else ''}: "
            + ", ".join(dropped), DataWarning)
    return X[:, keep], [names[j] for j in keep], dropped


def _full_rank_columns(X: np.ndarray, tol: float) -> set[int] | None:
    """Every column, when one Householder QR shows none is near the span of those before it; else None.

    |R_jj| is the norm of column j's residual on the columns before it, the quantity the
    sequential test compares with ``tol`` times the column's norm, so when every ratio
    clears ``tol`` (with a margin for rounding) the sequential test keeps every column: the
    common case costs one LAPACK call instead of p Gram-Schmidt passes.
    """
    largest = np.max(np.abs(X), axis=0, initial=0.0)
    if np.any(largest == 0) or X.shape[0] < X.shape[1]:
        return None
    scaled = X / largest
    with np.errstate(all="ignore"):
        R = np.linalg.qr(scaled, mode="r")
        ratio = np.abs(np.diagonal(R)) / np.linalg.norm(scaled, axis=0)
    if np.all(ratio > 100 * tol):
        return set(range(X.shape[1]))
    return None


def _rank_revealing(X: np.ndarray, tol: float):
    """Sequential Gram-Schmidt with re-orthogonalisation; returns kept column indices."""
    # the kept directions as rows of one preallocated array: growing it column by column
    # copied O(n p²) numbers (InstEval, 73k x 28: a fifth of the fit)
    rows = np.empty((X.shape[1], X.shape[0]))
    kept: set[int] = set()
    r = 0
    for j in range(X.shape[1]):
        col = X[:, j].astype(float)
        largest = np.max(np.abs(col), initial=0.0)
        if largest == 0:
            continue
        col = col / largest  # the test below is scale-free; unscaled, a column of 1e300 overflows the norm
        norm0 = np.linalg.norm(col)
        basis = rows[:r]
        resid = col - (basis @ col) @ basis
        resid -= (basis @ resid) @ basis
        norm = np.linalg.norm(resid)
        if norm > tol * norm0:
            rows[r] = resid / norm
            r += 1
            kept.add(j)
    return rows[:r].T, kept, None
