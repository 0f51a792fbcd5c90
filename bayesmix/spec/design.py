"""Model matrices as R's ``model.matrix`` builds them, from terms parsed by formulae.

formulae parses the formula text into terms; the columns are built here so that they
follow R exactly: the factor's own level order (first level = reference), treatment
contrasts for unordered and polynomial contrasts for ordered factors, R's rule for
when a factor gets full indicator coding, R's column order and names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesmix.errors import DataError, DataWarning, warn


@dataclass(frozen=True)
class Factor:
    """A categorical variable as R stores it: integer codes into ordered level labels."""

    codes: np.ndarray  # int64, 0-based
    levels: tuple[str, ...]
    ordered: bool = False

    @property
    def nlevels(self) -> int:
        return len(self.levels)


# --- evaluating expressions against the data ------------------------------------------------

_IDENT = re.compile(r"`([^`]*)`|([A-Za-z.][A-Za-z0-9._]*)")


def _r_scale(x):
    x = np.asarray(x, dtype=float)
    return (x - x.mean()) / x.std(ddof=1)  # R's scale() divides by the n-1 SD


def _log(x, base=None):
    x = np.asarray(x, dtype=float)
    return np.log(x) if base is None else np.log(x) / np.log(base)


_FUNCTIONS = {
    "log": _log,
    "log10": lambda x: np.log10(np.asarray(x, dtype=float)),
    "log2": lambda x: np.log2(np.asarray(x, dtype=float)),
    "log1p": lambda x: np.log1p(np.asarray(x, dtype=float)),
    "exp": lambda x: np.exp(np.asarray(x, dtype=float)),
    "sqrt": lambda x: np.sqrt(np.asarray(x, dtype=float)),
    "abs": lambda x: np.abs(np.asarray(x, dtype=float)),
    "sin": np.sin,
    "cos": np.cos,
    "I": lambda x: x,
    "scale": _r_scale,
    "offset": lambda x: x,
    "as.numeric": lambda x: np.asarray(x, dtype=float),
    "factor": lambda x: _as_factor_marker(x),
    "as.factor": lambda x: _as_factor_marker(x),
    "C": lambda x: _as_factor_marker(x),
    "pmin": np.minimum,
    "pmax": np.maximum,
    "round": np.round,
}


class _FactorMarker:
    """Wraps the value of ``factor(x)`` so the builder treats it as categorical."""

    def __init__(self, values):
        self.values = values


def _as_factor_marker(x):
    return _FactorMarker(x)


class Evaluator:
    """Evaluates R-style expressions (``log(x + 1)``, ``size - incidence``) on a data frame.

    Column names may hold dots (``total.fruits``), which Python cannot parse, so every
    column reference is renamed to a safe identifier before evaluation.
    """

    def __init__(self, data: pd.DataFrame):
        self.data = data
        self._columns = list(data.columns)
        self._safe = {str(c): f"zzc{i}zz" for i, c in enumerate(self._columns)}
        self._unsafe = {v: k for k, v in self._safe.items()}

    def referenced_columns(self, text: str) -> list[str]:
        found = []
        for m in _IDENT.finditer(text):
            name = m.group(1) if m.group(1) is not None else m.group(2)
            if name in self._safe and name not in found:
                found.append(name)
        return found

    def unknown_names(self, text: str) -> list[str]:
        """Identifiers that are neither columns nor known functions/constants."""
        out = []
        for m in _IDENT.finditer(_strip_strings(text)):
            name = m.group(1) if m.group(1) is not None else m.group(2)
            end = m.end()
            is_call = end < len(text) and text[end:].lstrip().startswith("(")
            if name in self._safe or name in ("TRUE", "FALSE", "T", "F") or _is_number(name):
                continue
            if is_call and name in _FUNCTIONS:
                continue
            if not is_call and name not in out:
                out.append(name)
        return out

    def mangle(self, text: str) -> str:
        def repl(m):
            name = m.group(1) if m.group(1) is not None else m.group(2)
            return self._safe.get(name, m.group(0))

        return _IDENT.sub(repl, text).replace("^", "**")

    def demangle(self, text: str) -> str:
        return re.sub(r"zzc\d+zz", lambda m: self._unsafe.get(m.group(0), m.group(0)), text)

    def evaluate(self, text: str, mangled: bool = False):
        expr = text if mangled else self.mangle(text)
        names = {safe: self._column_values(col) for col, safe in self._safe.items() if safe in expr}
        namespace = dict(_FUNCTIONS)
        namespace.update(TRUE=True, FALSE=False, T=True, F=False)
        namespace.update(names)
        try:
            return eval(compile(expr, "<formula>", "eval"), {"__builtins__": {}}, namespace)
        except Exception as exc:  # noqa: BLE001 - re-raised with the expression named
            raise DataError(f"cannot evaluate {self.demangle(expr)!r}: {exc}") from exc

    def _column_values(self, col):
        s = self.data[col]
        if isinstance(s.dtype, pd.CategoricalDtype) or s.dtype == object or pd.api.types.is_string_dtype(s):
            return s
        if pd.api.types.is_bool_dtype(s):
            return s
        return s.to_numpy(dtype=float)


def _strip_strings(text: str) -> str:
    return re.sub(r"'[^']*'|\"[^\"]*\"", "", text)


def _is_number(name: str) -> bool:
    try:
        float(name)
        return True
    except ValueError:
        return False


def as_factor(values, name: str) -> Factor:
    """R's ``factor()``: keep a categorical's level order, sort other values; drop unused levels."""
    if isinstance(values, _FactorMarker):
        values = values.values
    if isinstance(values, pd.Series):
        values = values.array
    if isinstance(values, pd.Categorical | pd.arrays.Categorical) or isinstance(
        getattr(values, "dtype", None), pd.CategoricalDtype
    ):
        cat = pd.Categorical(values)
        cat = cat.remove_unused_categories()
        return Factor(cat.codes.astype(np.int64), tuple(str(c) for c in cat.categories), bool(cat.ordered))
    arr = np.asarray(values)
    if arr.dtype == bool:
        codes = arr.astype(np.int64)
        used = np.unique(codes)
        labels = ("FALSE", "TRUE")
        remap = {v: i for i, v in enumerate(used)}
        return Factor(np.array([remap[c] for c in codes], dtype=np.int64), tuple(labels[u] for u in used))
    uniques, codes = np.unique(arr, return_inverse=True)
    return Factor(codes.astype(np.int64), tuple(_label(u) for u in uniques))


def _label(value) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def is_categorical(values) -> bool:
    if isinstance(values, _FactorMarker):
        return True
    dtype = getattr(values, "dtype", None)
    if isinstance(dtype, pd.CategoricalDtype):
        return True
    if dtype is not None and (dtype == object or dtype == bool or pd.api.types.is_string_dtype(dtype)):
        return True
    return False


def interaction_factor(factors: list[Factor]) -> Factor:
    """R's ``a:b`` on factors: labels "a_i:b_j", first factor slowest, unused levels dropped."""
    codes = np.zeros(len(factors[0].codes), dtype=np.int64)
    for f in factors:
        codes = codes * f.nlevels + f.codes
    used, new_codes = np.unique(codes, return_inverse=True)
    labels = []
    for combined in used:
        parts = []
        for f in reversed(factors):
            combined, idx = divmod(int(combined), f.nlevels)
            parts.append(f.levels[idx])
        labels.append(":".join(reversed(parts)))
    return Factor(new_codes.astype(np.int64), tuple(labels))


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


def model_matrix(rhs: str, ev: Evaluator) -> ModelMatrix:
    """R's ``model.matrix(~ rhs, data)`` for the right-hand side of a formula."""
    from formulae import (
        model_description,  # parsed by formulae, as the product promises
    )

    mangled = ev.mangle(rhs)
    try:
        desc = model_description("zzyzz ~ " + mangled)
    except Exception as exc:  # noqa: BLE001 - formulae's parse errors name no column
        raise DataError(f"cannot parse the terms {rhs!r}: {exc}") from exc
    n = len(ev.data)
    has_intercept = any(type(t).__name__ == "Intercept" for t in desc.terms)
    terms = [t for t in desc.terms if type(t).__name__ == "Term"]
    # R orders terms by degree (main effects, then two-way interactions, ...), stably.
    terms.sort(key=lambda t: len(t.components))

    columns: list[np.ndarray] = []
    names: list[str] = []
    owners: list[str] = []
    if has_intercept:
        columns.append(np.ones((n, 1)))
        names.append("(Intercept)")
        owners.append("(Intercept)")
    values = {c.name: ev.evaluate(c.name, mangled=True) for t in terms for c in t.components}
    dummy_for_first_factor = not has_intercept
    previous: list[frozenset] = []
    for term in terms:
        blocks = []
        component_names = [c.name for c in term.components]
        for comp in term.components:
            # R's TermCode: a factor is coded by contrasts when the term without it is
            # contained in a preceding term (the empty margin always is); without an
            # intercept, the first factor of the first term holding one gets indicators.
            margin = frozenset(component_names) - {comp.name}
            by_contrasts = not margin or any(margin <= p for p in previous)
            if dummy_for_first_factor and is_categorical(values[comp.name]):
                by_contrasts, dummy_for_first_factor = False, False
            blocks.append(_component_block(comp, values[comp.name], ev, n, by_contrasts))
        previous.append(frozenset(component_names))
        mat, cols = _interact(blocks)
        label = ":".join(ev.demangle(_r_call_name(c)) for c in component_names)
        columns.append(mat)
        names.extend(cols)
        owners.extend([label] * len(cols))
    matrix = np.hstack(columns) if columns else np.zeros((n, 0))
    return ModelMatrix(np.ascontiguousarray(matrix, dtype=float), names, owners, has_intercept)


def _r_call_name(name: str) -> str:
    return name.replace(" ** ", "^").replace("**", "^")


def _component_block(comp, values, ev: Evaluator, n: int, coded_by_contrasts: bool) -> tuple[np.ndarray, list[str]]:
    display = ev.demangle(_r_call_name(comp.name))
    if is_categorical(values):
        factor = as_factor(values, display)
        if factor.nlevels < 2 and coded_by_contrasts:
            raise DataError(f"the factor {display!r} has a single level ({factor.levels[0]!r}); contrasts need two or more")
        if coded_by_contrasts:
            contrast, suffixes = (contr_poly if factor.ordered else contr_treatment)(factor.levels)
        else:
            contrast, suffixes = contr_indicator(factor.levels)
        prefix = display
        return contrast[factor.codes], [f"{prefix}{s}" for s in suffixes]
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.ndim == 2:
        return arr, [f"{display}{j + 1}" for j in range(arr.shape[1])]
    return arr.reshape(n, 1), [display]


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
    q, r, _ = _rank_revealing(X, tol)
    keep = [j for j in range(X.shape[1]) if j in r]
    dropped = [names[j] for j in range(X.shape[1]) if j not in r]
    if dropped:
        warn(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
            f"column{'s' if len(dropped) > 1 else ''} / coefficient{'s' if len(dropped) > 1 else ''}: "
            + ", ".join(dropped), DataWarning)
    return X[:, keep], [names[j] for j in keep], dropped


def _rank_revealing(X: np.ndarray, tol: float):
    """Sequential Gram-Schmidt with re-orthogonalisation; returns kept column indices."""
    basis = np.zeros((X.shape[0], 0))
    kept: set[int] = set()
    for j in range(X.shape[1]):
        col = X[:, j].astype(float)
        norm0 = np.linalg.norm(col)
        if norm0 == 0:
            continue
        resid = col - basis @ (basis.T @ col)
        resid -= basis @ (basis.T @ resid)
        norm = np.linalg.norm(resid)
        if norm > tol * norm0:
            basis = np.column_stack([basis, resid / norm])
            kept.add(j)
    return basis, kept, None
