"""The values an R expression evaluates to, and how data-frame columns become such values.

Four kinds of value, as R's model frames have them:

* numeric: a float ``ndarray`` (NaN for missing), 0-d for a single number;
* logical: a bool ``ndarray``;
* categorical: a ``pandas.Categorical`` with string levels in R's level order (a pandas
  category column keeps its order; string and object columns get sorted levels, as R's
  ``factor()``);
* a matrix: a 2-D float ``ndarray`` (``poly()``, ``cbind()``).

Strings from the formula itself (``ref = "B"``, ``levels = c("a", "b")``) are ``str``
ndarrays.  Everything here turns pandas and NumPy surprises into a :class:`DataError`
that names the column.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from bayesmix.errors import DataError
from bayesmix.rformat import r_format_number


def r_label(value) -> str:
    """R's ``as.character`` of one value: numbers with up to 15 significant digits (``1``, ``0.1``, ``1e+05``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return "TRUE" if value else "FALSE"
    if isinstance(value, numbers.Real):
        return r_format_number(float(value), digits=15)
    return str(value)


def is_categorical(value) -> bool:
    return isinstance(value, pd.Categorical)


def is_strings(value) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind in "UO"


def categorical_from_labels(labels, levels=None, ordered: bool = False) -> pd.Categorical:
    """A categorical of string labels (None or NaN for missing); sorted levels unless given."""
    values = np.asarray(labels, dtype=object).ravel()
    present = ~pd.isna(values)
    # vectorised (a per-row Python loop cost ~1 µs a row); numpy sorts strings by code point, as sorted() does
    strings = values[present].astype(str)
    codes = np.full(len(values), -1, dtype=np.int64)
    if levels is None:
        uniques, inverse = np.unique(strings, return_inverse=True)
        levels = uniques.tolist()
        codes[present] = inverse
    elif len(strings):
        # values outside the levels are missing, as in R's factor(x, levels =)
        codes[present] = pd.Index(list(levels), dtype=object).get_indexer(strings)  # -1 outside the levels
    # object-dtype levels: pandas would infer Arrow-backed strings, whose element access costs ~10x more
    return pd.Categorical.from_codes(codes, categories=pd.Index(list(levels), dtype=object), ordered=ordered)


def as_categorical(value) -> pd.Categorical:
    """R's ``factor(x)`` of any value: categoricals as they are, logicals FALSE/TRUE, numbers sorted numerically."""
    if is_categorical(value):
        return value
    arr = np.atleast_1d(np.asarray(value))
    if arr.dtype == bool:
        used = [label for label, flag in (("FALSE", False), ("TRUE", True)) if (arr == flag).any()]
        return categorical_from_labels(np.where(arr, "TRUE", "FALSE"), levels=used)
    if arr.dtype.kind in "iuf":
        return _numbers_as_categorical(arr.astype(float))
    return categorical_from_labels(arr)


def _numbers_as_categorical(arr: np.ndarray) -> pd.Categorical:
    present = ~np.isnan(arr)
    uniques, inverse = np.unique(arr[present], return_inverse=True)
    levels = [r_label(float(v)) for v in uniques]  # formatted once per level, not per row
    if len(set(levels)) < len(levels):  # distinct numbers that print alike are one level, as in R
        return categorical_from_labels(np.array([r_label(float(v)) if ok else None for v, ok in zip(arr, present)]),
                                       levels=list(dict.fromkeys(levels)))
    codes = np.full(len(arr), -1, dtype=np.int64)
    codes[present] = inverse
    return pd.Categorical.from_codes(codes, categories=levels)


def categorical_labels(value: pd.Categorical) -> np.ndarray:
    """The label of every element, None where missing."""
    cats = np.asarray(value.categories, dtype=object)
    codes = np.asarray(value.codes)
    out = np.empty(len(codes), dtype=object)
    out[codes >= 0] = cats[codes[codes >= 0]]
    out[codes < 0] = None
    return out


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


# --- data-frame columns ----------------------------------------------------------------------


def column_value(series: pd.Series, label: str):
    """A data-frame column as a formula value (see the module docstring for the kinds)."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return _from_pandas_categorical(pd.Categorical(series.array), label)
    if pd.api.types.is_bool_dtype(dtype):
        return _from_booleans(series.to_numpy(dtype=object))
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        return series.to_numpy(dtype=float, na_value=np.nan)
    if isinstance(dtype, pd.StringDtype):  # strings or missing by construction: no per-value type check
        return categorical_from_labels(series.to_numpy(dtype=object, na_value=None))
    if dtype == object or pd.api.types.is_string_dtype(dtype):
        return _from_objects(series.to_numpy(dtype=object), label)
    raise DataError(
        f"column {label!r} has type {dtype}, which a formula cannot use; "
        "convert it to numbers, strings or a pandas Categorical"
    )


def _from_pandas_categorical(cat: pd.Categorical, label: str) -> pd.Categorical:
    # tolist() converts Arrow-backed categories in one call (iterating them costs ~1 µs a level)
    levels = [r_label(c) for c in cat.categories.tolist()]
    if len(set(levels)) < len(levels):
        raise DataError(f"column {label!r} has categories that print alike ({', '.join(levels)}); R's levels must be distinct")
    return pd.Categorical.from_codes(np.asarray(cat.codes), categories=levels, ordered=bool(cat.ordered))


def _from_booleans(values: np.ndarray):
    if any(_missing(v) for v in values):  # a logical with NA: R treats it as a factor in a model matrix
        labels = np.array([None if _missing(v) else ("TRUE" if v else "FALSE") for v in values], dtype=object)
        return categorical_from_labels(labels, levels=[lv for lv in ("FALSE", "TRUE") if lv in set(labels)])
    return values.astype(bool)


def _from_objects(values: np.ndarray, label: str):
    present = [v for v in values if not _missing(v)]
    kinds = {_kind(v) for v in present}
    if not kinds:
        return np.full(len(values), np.nan)
    if kinds == {"string"}:
        return categorical_from_labels(values)
    if kinds == {"number"}:
        return np.array([np.nan if _missing(v) else float(v) for v in values], dtype=float)
    if kinds == {"logical"}:
        return _from_booleans(values)
    shown = ", ".join(sorted(kinds))
    raise DataError(
        f"column {label!r} mixes value types ({shown}); a column must hold numbers, strings or "
        "logicals, not a mixture"
    )


def _kind(value) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool | np.bool_):
        return "logical"
    if isinstance(value, numbers.Real):
        return "number"
    return type(value).__name__


class DataColumns:
    """A data frame's columns by their string form, converted on first use."""

    def __init__(self, data: pd.DataFrame):
        if not isinstance(data, pd.DataFrame):
            raise DataError(f"data must be a pandas DataFrame, got {type(data).__name__}")
        self.data = data
        self.labels: dict[str, object] = {}
        self.duplicated: set[str] = set()
        for label in data.columns.tolist():  # a list: iterating an Arrow-backed Index is slow
            key = str(label)
            if key in self.labels:
                self.duplicated.add(key)
            self.labels.setdefault(key, label)
        self._cache: dict[str, object] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.labels

    def __len__(self) -> int:
        return len(self.data)

    def names(self) -> list[str]:
        return list(self.labels)

    def value(self, name: str):
        if name in self.duplicated:
            raise DataError(f"the data have more than one column named {name!r}; rename them so the formula can tell them apart")
        if name not in self._cache:
            series = self.data[self.labels[name]]
            self._cache[name] = column_value(series, name)
        return self._cache[name]

    def describe(self, limit: int = 25) -> str:
        shown = ", ".join(repr(n) for n in list(self.labels)[:limit])
        more = len(self.labels) - limit
        return shown + (f", ... ({more} more)" if more > 0 else "")
