"""The fixed table of R functions a formula may call, each with R's semantics.

Nothing outside :data:`FUNCTIONS` can be called from a formula.  Arguments are matched as
R matches them (exact name, then a unique prefix of a name before ``...``, then position).

``scale()`` and ``poly()`` are *stateful*: fitted on the training data, their parameters
(centre and scale; the ``alpha``/``norm2`` recursion coefficients) are remembered in the
model-frame state under the call's deparsed text, so new data is transformed with the
training parameters, as R's ``makepredictcall`` arranges for ``predict()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesmix.errors import FormulaError
from bayesmix.rformat import r_round
from bayesmix.spec.rvalues import (
    as_categorical,
    categorical_from_labels,
    categorical_labels,
    is_categorical,
    is_strings,
    r_label,
)


@dataclass(frozen=True)
class RFunction:
    """One callable R function: its formal arguments and its implementation."""

    params: tuple[str, ...]  # formals before any '...', matched by name, prefix or position
    impl: Callable
    variadic: bool = False  # a leading '...': unnamed arguments go to impl as positional values
    named_only: tuple[str, ...] = ()  # formals after '...', matched by exact name only


def bind_arguments(func_name: str, func: RFunction, args) -> tuple[list, dict]:
    """R's argument matching: ``args`` are (name or None, value) pairs; returns (positional, named)."""
    named: dict = {}
    positional: list = []
    for name, value in args:
        if name is None:
            positional.append(value)
            continue
        formal = _match_name(func_name, func, name)
        if formal in named:
            raise FormulaError(f"{func_name}(): argument {formal!r} given more than once")
        named[formal] = value
    if func.variadic:
        return positional, named
    free = [p for p in func.params if p not in named]
    if len(positional) > len(free):
        raise FormulaError(f"{func_name}() takes at most {len(func.params)} arguments ({', '.join(func.params)}), got more")
    named.update(zip(free, positional, strict=False))
    return [], named


def _match_name(func_name: str, func: RFunction, name: str) -> str:
    formals = func.params + func.named_only
    if name in formals:
        return name
    prefixed = [p for p in func.params if p.startswith(name)] if not func.variadic else []
    if len(prefixed) == 1:
        return prefixed[0]
    expected = ", ".join(formals) or "none"
    raise FormulaError(f"{func_name}(): unused argument {name!r} (its named arguments: {expected})")


def python_name(formal: str) -> str:
    """The keyword an implementation receives for an R formal (``na.rm`` -> ``na_rm``)."""
    return formal.replace(".", "_")


# --- argument helpers ------------------------------------------------------------------------


def _numbers(ctx, value, what: str = "x") -> np.ndarray:
    """A numeric argument as floats; factors and strings are refused as R refuses them."""
    if is_categorical(value) or is_strings(value) or value is None:
        kind = "a factor" if is_categorical(value) else "text" if value is not None else "NULL"
        raise ctx.fail(f"non-numeric argument {what!r} ({kind}) to a mathematical function")
    return np.asarray(value, dtype=float)


def _vector(ctx, value, what: str = "x") -> np.ndarray:
    out = _numbers(ctx, value, what)
    if out.ndim > 1:
        raise ctx.fail(f"{what!r} must be a single column, not a matrix")
    return np.broadcast_to(out, (ctx.n,)) if out.ndim == 0 else out


def _scalar(ctx, value, what: str):
    arr = np.asarray(categorical_labels(value) if is_categorical(value) else value)
    if arr.size != 1:
        raise ctx.fail(f"{what!r} must be a single value, got {arr.size}")
    return arr.reshape(()).item()


def _flag(ctx, value, what: str) -> bool:
    item = _scalar(ctx, value, what)
    if not isinstance(item, bool | int | float) or isinstance(item, float) and math.isnan(item):
        raise ctx.fail(f"{what!r} must be TRUE or FALSE, got {item!r}")
    return bool(item)


def _whole(ctx, value, what: str, minimum: int) -> int:
    item = _scalar(ctx, value, what)
    if not isinstance(item, int | float) or isinstance(item, bool) or not float(item).is_integer() or item < minimum:
        raise ctx.fail(f"{what!r} must be a whole number of at least {minimum}, got {item!r}")
    return int(item)


def _math(fn, nan_warning: bool = False):
    """An elementwise numeric function; R warns 'NaNs produced' where the domain is left."""

    def impl(ctx, x):
        v = _numbers(ctx, x)
        with np.errstate(all="ignore"):
            out = fn(v)
        if nan_warning and np.isnan(out).sum() > np.isnan(v).sum():
            ctx.warn("NaNs produced")
        return out

    return impl


# --- arithmetic and rounding -----------------------------------------------------------------


def _log(ctx, x, base=math.e):
    v, b = _numbers(ctx, x), float(_scalar(ctx, _numbers(ctx, base, "base"), "base"))
    with np.errstate(all="ignore"):
        out = np.log(v) if b == math.e else np.log(v) / np.log(b)
    if np.isnan(out).sum() > np.isnan(v).sum():
        ctx.warn("NaNs produced")
    return out


def _round(ctx, x, digits=0.0):
    """R >= 4.0's round(): ties to even; with digits, the nearer of the two decimal candidates (nmath fround)."""
    v = _numbers(ctx, x)
    d = float(_scalar(ctx, _numbers(ctx, digits, "digits"), "digits"))
    if d == 0:
        return np.rint(v)
    return np.vectorize(lambda e: r_round(e, d), otypes=[float])(v) if v.size else v


def _parallel(reduce_na, reduce_keep):
    def impl(ctx, *args, na_rm=False):
        if not args:
            raise ctx.fail("no arguments")
        values = [_numbers(ctx, a) for a in args]
        reduce = reduce_na if _flag(ctx, na_rm, "na.rm") else reduce_keep
        out = values[0]
        for v in values[1:]:
            out = reduce(out, v)
        return out

    return impl


# --- stateful transforms ---------------------------------------------------------------------


def _scale(ctx, x, center=True, scale=True):
    v = _vector(ctx, x)
    params = ctx.recall()
    if params is None:
        shift = _centre_of(ctx, v, center)
        centred = v if shift is None else v - shift
        params = {"center": shift, "scale": _spread_of(ctx, centred, scale)}
        ctx.remember(params)
    out = v if params["center"] is None else v - params["center"]
    return out if params["scale"] is None else out / params["scale"]


def _centre_of(ctx, v: np.ndarray, center) -> float | None:
    item = _scalar(ctx, center, "center")
    if isinstance(item, bool):
        present = v[~np.isnan(v)]
        return (float(present.mean()) if len(present) else float("nan")) if item else None
    return float(_scalar(ctx, _numbers(ctx, center, "center"), "center"))


def _spread_of(ctx, centred: np.ndarray, scale) -> float | None:
    if isinstance(_scalar(ctx, scale, "scale"), bool):
        if not _flag(ctx, scale, "scale"):
            return None
        present = centred[~np.isnan(centred)]
        # R's scale(): root of the sum of squares over n - 1 (the SD when centred)
        return float(np.sqrt(np.sum(present**2) / max(1, len(present) - 1)))
    return float(_scalar(ctx, _numbers(ctx, scale, "scale"), "scale"))


def _poly(ctx, x, degree=1.0, coefs=None, raw=False, simple=False):
    if coefs is not None:
        raise FormulaError("poly(): 'coefs' is set from the training data by bayesmix; do not pass it")
    d = _whole(ctx, degree, "degree", minimum=1)
    v = _vector(ctx, x)
    if np.isnan(v).any():
        raise ctx.fail("missing values are not allowed in 'poly'")
    if _flag(ctx, raw, "raw"):
        return v[:, None] ** np.arange(1, d + 1)
    params = ctx.recall()
    if params is None:
        params = _poly_coefficients(ctx, v, d)
        ctx.remember(params)
    return _poly_columns(v, params["alpha"], params["norm2"], d)


def _poly_coefficients(ctx, v: np.ndarray, degree: int) -> dict:
    """R's poly(): alpha and norm2 of the three-term recursion, from the QR of centred powers."""
    if degree >= len(np.unique(v)):
        raise ctx.fail("'degree' must be less than number of unique points")
    mean = float(v.mean())
    centred = v - mean
    q, r = np.linalg.qr(centred[:, None] ** np.arange(degree + 1))
    z = q * np.diag(r)  # Q times R's diagonal: independent of the QR's sign convention
    norm2 = (z**2).sum(axis=0)
    alpha = ((centred[:, None] * z**2).sum(axis=0) / norm2 + mean)[:degree]
    return {"degree": degree, "alpha": tuple(float(a) for a in alpha), "norm2": (1.0, *(float(n) for n in norm2))}


def _poly_columns(v: np.ndarray, alpha, norm2, degree: int) -> np.ndarray:
    """R's predict.poly recursion; used for the training data too, so fitted and predicted agree."""
    z = np.ones((len(v), degree + 1))
    z[:, 1] = v - alpha[0]
    for i in range(1, degree):
        z[:, i + 1] = (v - alpha[i]) * z[:, i] - (norm2[i + 1] / norm2[i]) * z[:, i - 1]
    return z[:, 1:] / np.sqrt(np.asarray(norm2[2:]))


# --- factors ---------------------------------------------------------------------------------


def _factor(ctx, x, levels=None, labels=None, ordered=None):
    # R's default is ordered = is.ordered(x)
    is_ordered = bool(is_categorical(x) and x.ordered) if ordered is None else _flag(ctx, ordered, "ordered")
    if levels is None and (is_categorical(x) or np.asarray(x).dtype.kind in "fb"):
        # factor(f) keeps f's level order and drops unused levels; numbers sort numerically
        used = as_categorical(x if is_categorical(x) else _vector_or_logical(ctx, x)).remove_unused_categories()
        out = pd.Categorical(used, ordered=is_ordered)
    else:
        out = categorical_from_labels(_labels_of(ctx, x), _level_labels(ctx, x, levels), is_ordered)
    return _rename_levels(ctx, out, labels)


def _vector_or_logical(ctx, x) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim > 1:
        raise ctx.fail("a factor needs a single column, not a matrix")
    return np.broadcast_to(arr, (ctx.n,)) if arr.ndim == 0 else arr


def _labels_of(ctx, x) -> np.ndarray:
    if is_categorical(x):
        return categorical_labels(x)
    arr = np.asarray(x)
    if arr.ndim > 1:
        raise ctx.fail("a factor needs a single column, not a matrix")
    arr = np.broadcast_to(arr, (ctx.n,)) if arr.ndim == 0 else arr
    if arr.dtype.kind == "f":
        return np.array([None if np.isnan(v) else r_label(float(v)) for v in arr], dtype=object)
    return np.array([r_label(v.item() if hasattr(v, "item") else v) for v in arr], dtype=object)


def _level_labels(ctx, x, levels) -> list[str]:
    """The given levels, or R's default: the sorted unique values (numbers numerically)."""
    if levels is not None:
        given = categorical_labels(levels) if is_categorical(levels) else np.atleast_1d(np.asarray(levels))
        return list(dict.fromkeys(r_label(v.item() if hasattr(v, "item") else v) for v in given))
    arr = categorical_labels(x) if is_categorical(x) else np.asarray(x)
    if arr.dtype.kind in "fb":
        present = np.unique(arr[~np.isnan(arr)]) if arr.dtype.kind == "f" else np.unique(arr)
        return [r_label(v.item()) for v in present]
    return sorted({str(v) for v in np.atleast_1d(arr) if v is not None})


def _rename_levels(ctx, out: pd.Categorical, labels) -> pd.Categorical:
    if labels is None:
        return out
    new = [r_label(v.item() if hasattr(v, "item") else v) for v in np.atleast_1d(np.asarray(labels))]
    if len(new) != len(out.categories) or len(set(new)) != len(new):
        raise ctx.fail(f"'labels' must give {len(out.categories)} distinct names, one per level; got {len(new)}")
    return out.rename_categories(new)


def _as_factor(ctx, x):
    return x if is_categorical(x) else _factor(ctx, x)


def _ordered(ctx, x, levels=None, labels=None):
    return _factor(ctx, x, levels, labels, ordered=True)


def _relevel(ctx, x, ref):
    if not is_categorical(x) or x.ordered:
        raise ctx.fail("'relevel' only for (unordered) factors")
    levels = list(x.categories)
    chosen = _scalar(ctx, ref, "ref")
    if isinstance(chosen, int | float) and not isinstance(chosen, bool):
        if not (float(chosen).is_integer() and 1 <= chosen <= len(levels)):
            raise ctx.fail(f"ref = {chosen!r} must be a level number between 1 and {len(levels)}")
        chosen = levels[int(chosen) - 1]
    if str(chosen) not in levels:
        raise ctx.fail(f"'ref' must be an existing level: {chosen!r} is not one of {', '.join(map(repr, levels))}")
    return x.reorder_categories([str(chosen)] + [lv for lv in levels if lv != str(chosen)])


def _as_numeric(ctx, x):
    if is_categorical(x):  # a factor's 1-based codes, as R (not its labels)
        codes = np.asarray(x.codes, dtype=float)
        return np.where(codes < 0, np.nan, codes + 1)
    if is_strings(x):
        return np.array([_parse_number(ctx, v) for v in np.atleast_1d(x)], dtype=float)
    return np.asarray(x, dtype=float)


def _parse_number(ctx, text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        ctx.warn("NAs introduced by coercion")
        return float("nan")


def _as_integer(ctx, x):
    return np.trunc(_as_numeric(ctx, x))


# --- building vectors and matrices -----------------------------------------------------------


def _cbind(ctx, *args, deparse_level=1):
    if not args:
        raise ctx.fail("cbind() needs at least one column")
    columns = [np.broadcast_to(v, (ctx.n,)) if v.ndim == 0 else v for v in (_numbers(ctx, a) for a in args)]
    return np.column_stack(columns)


def _combine(ctx, *args, **_names):
    """R's c(): numbers stay numbers, anything textual makes text."""
    parts = [np.atleast_1d(categorical_labels(a) if is_categorical(a) else np.asarray(a)) for a in args]
    if not parts:
        return None
    if any(p.dtype.kind in "UO" for p in parts):
        return np.array([r_label(v.item() if hasattr(v, "item") else v) for p in parts for v in p], dtype=str)
    return np.concatenate([p.astype(float) if p.dtype.kind != "b" else p for p in parts])


def _offset(ctx, object):
    return _numbers(ctx, object, "object")


FUNCTIONS: dict[str, RFunction] = {
    "I": RFunction(("x",), lambda ctx, x: x),
    "offset": RFunction(("object",), _offset),
    "log": RFunction(("x", "base"), _log),
    "log2": RFunction(("x",), _math(np.log2, nan_warning=True)),
    "log10": RFunction(("x",), _math(np.log10, nan_warning=True)),
    "log1p": RFunction(("x",), _math(np.log1p, nan_warning=True)),
    "exp": RFunction(("x",), _math(np.exp)),
    "expm1": RFunction(("x",), _math(np.expm1)),
    "sqrt": RFunction(("x",), _math(np.sqrt, nan_warning=True)),
    "abs": RFunction(("x",), _math(np.abs)),
    "sign": RFunction(("x",), _math(np.sign)),
    "sin": RFunction(("x",), _math(np.sin)),
    "cos": RFunction(("x",), _math(np.cos)),
    "tan": RFunction(("x",), _math(np.tan)),
    "floor": RFunction(("x",), _math(np.floor)),
    "ceiling": RFunction(("x",), _math(np.ceil)),
    "trunc": RFunction(("x",), _math(np.trunc)),
    "round": RFunction(("x", "digits"), _round),
    "pmin": RFunction((), _parallel(np.fmin, np.minimum), variadic=True, named_only=("na.rm",)),
    "pmax": RFunction((), _parallel(np.fmax, np.maximum), variadic=True, named_only=("na.rm",)),
    "scale": RFunction(("x", "center", "scale"), _scale),
    "poly": RFunction(("x", "degree"), _poly, named_only=("coefs", "raw", "simple")),
    "factor": RFunction(("x", "levels", "labels", "ordered"), _factor),
    "as.factor": RFunction(("x",), _as_factor),
    "ordered": RFunction(("x", "levels", "labels"), _ordered),
    "relevel": RFunction(("x", "ref"), _relevel),
    "as.numeric": RFunction(("x",), _as_numeric),
    "as.double": RFunction(("x",), _as_numeric),
    "as.integer": RFunction(("x",), _as_integer),
    "cbind": RFunction((), _cbind, variadic=True, named_only=("deparse.level",)),
    "c": RFunction((), _combine, variadic=True),
}

# Calls whose parameters are learned from the training data and kept in the model-frame state.
STATEFUL = frozenset({"scale", "poly"})


def allowed_functions() -> str:
    return ", ".join(sorted(FUNCTIONS, key=str.lower))
