"""Data validation before any work: column types, infinite values, NaN made by transforms, weights.

Two hooks in :func:`bayesmix.spec.model.compile_model`:

- :func:`check_columns` on the raw data, before anything is evaluated: a column the
  formula (or ``weights=``/``offset=``) names must have a type bayesmix can model. A
  complex column is refused; an object column holding only numbers is read as numbers
  (pandas makes such columns from mixed sources, and R would have a numeric vector); an
  object column mixing kinds of values (numbers and strings, say) is refused, naming the
  column, rather than silently becoming a factor; ±inf is refused, naming the column and
  the number of rows (lme4 refuses it too: R's model.matrix fails on "NA/NaN/Inf").
- :func:`nonfinite_rows` on the evaluated response, model-matrix columns, offset and
  weights: ±inf made by a transform (``log(0)``) is refused; NaN made by a transform
  (``log`` of a negative value) marks the row to drop, counted and reported as missing
  values are (R's model.frame evaluates the transform, and na.omit drops the NaN row).
"""

from __future__ import annotations

import numbers
import re

import numpy as np
import pandas as pd

from bayesmix.errors import BayesmixError, DataError, DataWarning, warn


def used_columns(data: pd.DataFrame, *texts) -> list:
    """The columns of ``data`` whose names appear as identifiers in any of ``texts``.

    Read from the text alone (a name bounded by non-identifier characters, or in
    backticks), so it does not depend on how the formula is later evaluated; naming one
    column too many only means one more column is checked.
    """
    joined = " ".join(t for t in texts if isinstance(t, str))
    found = []
    for col in data.columns.tolist():  # a list: iterating an Arrow-backed Index is slow
        name = re.escape(str(col))
        if re.search(rf"(?<![\w.]){name}(?![\w.])", joined) or f"`{col}`" in joined:
            found.append(col)
    return found


def check_columns(data: pd.DataFrame, columns) -> pd.DataFrame:
    """The data with number-holding object columns read as numbers; unusable columns refused."""
    converted = {}
    # counted on a list: comparing an Arrow-backed column Index (pandas 3) costs ~40 µs a column
    labels = data.columns.tolist()
    for col in columns:
        if labels.count(col) > 1:
            raise DataError(f"the data have more than one column named {col!r}; "
                            "rename them so the formula can tell them apart")
        series = data[col]
        if pd.api.types.is_complex_dtype(series.dtype):
            raise DataError(f"column {col!r} holds complex numbers ({series.dtype}); bayesmix models real values only")
        if series.dtype == object:
            numeric = _object_as_numbers(col, series)
            if numeric is not None:
                converted[col] = numeric
                series = numeric
        if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
            _refuse_infinite(f"column {col!r}", series.to_numpy(dtype=float))
    return data.assign(**{str(k): v for k, v in converted.items()}) if converted else data


def _kind(value) -> str | None:
    """The kind of one cell of an object column; None for a missing value."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | np.bool_):
        return "logical"
    if isinstance(value, numbers.Complex) and not isinstance(value, numbers.Real):
        return "complex"
    if isinstance(value, numbers.Real):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def _object_as_numbers(col, series: pd.Series) -> pd.Series | None:
    """An object column of numbers as float; None for strings (a factor, as R's character columns)."""
    if pd.api.types.infer_dtype(series, skipna=True) == "string":  # labels (the usual case), found in C:
        return None  # the kinds below look at every cell in Python (~1 µs a row)
    kinds = {k for k in map(_kind, series.array) if k is not None}
    if kinds == {"number"}:
        return pd.Series(np.asarray([np.nan if _kind(v) is None else float(v) for v in series.array]),
                         index=series.index, name=series.name)
    if "complex" in kinds:
        raise DataError(f"column {col!r} holds complex numbers; bayesmix models real values only")
    if len(kinds) > 1:
        raise DataError(
            f"column {col!r} mixes kinds of values ({', '.join(sorted(kinds))}); make it all numbers "
            "(e.g. pd.to_numeric) or all labels (e.g. .astype(str) or a pandas Categorical)"
        )
    return None


def _refuse_infinite(what: str, values: np.ndarray) -> None:
    infinite = np.isinf(values)
    if infinite.any():
        rows = np.flatnonzero(infinite)
        shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
        raise DataError(
            f"{what} has {len(rows)} infinite value{'s' if len(rows) > 1 else ''} (rows {shown}); "
            "remove those rows or replace the values: a model cannot use them"
        )


def check_weights(weights: np.ndarray) -> None:
    """Prior weights: finite, non-negative (checked where they are read), not all zero."""
    _refuse_infinite("weights", weights)
    if len(weights) and not np.any(weights > 0):
        raise DataError("weights are all zero: no observation would count")


def nonfinite_rows(named: dict[str, np.ndarray]) -> np.ndarray | None:
    """Rows where an evaluated column is NaN (to drop), after refusing ±inf; None when all finite.

    ``named`` maps what the user wrote (``log(x)``, the response, ``offset``) to its values
    on the rows left after dropping missing values, so any NaN here was made by a transform.
    """
    bad, where = None, {}
    for name, values in named.items():
        values = np.asarray(values, dtype=float)
        if values.ndim == 1:
            values = values[:, None]
        finite = np.isfinite(values).all(axis=1)
        if finite.all():
            continue
        _refuse_infinite(f"{name!r} (as evaluated)", np.where(np.isinf(values).any(axis=1), np.inf, 0.0))
        where[name] = int((~finite).sum())
        bad = ~finite if bad is None else bad | ~finite
    if bad is None:
        return None
    listed = ", ".join(f"{name}: {k}" for name, k in where.items())
    n = int(bad.sum())
    warn(f"{n} row{'s' if n > 1 else ''} with missing values made by a transform removed (NaN in {listed})",
         DataWarning)
    return bad


def check_newdata(newdata, compiled) -> pd.DataFrame:
    """predict()'s new rows: a data frame with rows and usable columns.

    A missing grouping value gets the population-level prediction, as an unseen level does
    (lme4's ``allow.new.levels = TRUE``; predict's docstring says so); a missing covariate
    gives a NaN prediction for its row, as lme4's ``na.pass`` does.
    """
    if not isinstance(newdata, pd.DataFrame):
        raise DataError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}")
    if len(newdata) == 0:
        raise DataError("newdata has no rows")
    f = compiled.formula
    texts = [f.response, f.fixed, *f.offsets, *(t.expr for t in f.random)]
    newdata = check_columns(newdata, used_columns(newdata, *texts, *(t.group for t in f.random)))
    try:
        train = compiled.data
    except BayesmixError:  # a fit from a Dask DataFrame holds no rows (RowsRequiredError): nothing to compare
        return newdata
    _same_kinds_as_fitted(newdata, train)
    return newdata


def _same_kinds_as_fitted(newdata: pd.DataFrame, train: pd.DataFrame) -> None:
    """A column numeric in fitting must be numeric in newdata (text such as "1.5" is not a number)."""
    def numeric(series) -> bool:
        return pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)

    for col in newdata.columns:
        if col in train.columns and numeric(train[col]) and not numeric(newdata[col]):
            raise DataError(f"newdata column {col!r} holds {newdata[col].dtype} values, but it was numeric in "
                            "fitting; convert it (e.g. pd.to_numeric)")


def unknown_re_form_terms(wanted, terms) -> list[str]:
    """The random terms a ``re_form`` names that the model does not have, as written."""
    have = {(t.expr.replace(" ", ""), t.group) for t in terms}
    return [f"({w.expr} | {w.group})" for w in wanted if (w.expr.replace(" ", ""), w.group) not in have]
