"""Conditional effects (``bm.predictions``): the expected response over a grid of one predictor, by another,
with Wald intervals for a fit and posterior intervals for a posterior — brms' ``conditional_effects``
and bambi's ``interpret.predictions``.

The other covariates are held at their mean (numeric) or reference level (the first level of a
factor), as brms does; by default the predictions are population-level (``re_form="~0"``,
brms' ``re_formula = NA``).  For a fit the interval is the Wald confidence interval of the fixed
part (:mod:`bayesmix.results.intervals`); for a posterior, the equal-tailed quantiles of the
posterior draws of the mean.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesmix.errors import ArgumentError
from bayesmix.spec.design import Evaluator


def predictions(result, post=None, x: str | None = None, by: str | None = None, *, values=None, n: int = 50,
                level: float = 0.95, re_form="~0") -> pd.DataFrame:
    """One row per grid point: the predictor columns, ``estimate``, ``lower``, ``upper``.

    ``x`` (required): a numeric column gets ``n`` evenly spaced values over its observed range
    (or ``values``), a factor its levels; ``by``: a factor's levels, or for a numeric column its
    10th, 50th and 90th percentiles.
    """
    data = result.compiled.data
    for name, value in (("x", x), ("by", by)):
        if value is not None and value not in data.columns:
            raise ArgumentError(f"{name}={value!r} is not a column of the model's data "
                                f"(columns: {', '.join(map(str, data.columns))})")
    if x is None:
        raise ArgumentError("predictions() needs x=, the column to vary along the grid")
    if not 0.0 < level < 1.0:
        raise ArgumentError(f"level must lie in (0, 1), got {level!r}")
    grid = _grid(result, x, by, values, n)
    if post is None:
        ci = result.predict(grid, re_form=re_form, interval="confidence", level=level)
        estimate, lower, upper = ci["fit"].to_numpy(), ci["lwr"].to_numpy(), ci["upr"].to_numpy()
    else:
        draws = result.predict(post, newdata=grid, kind="mean", re_form=re_form)
        values_ = draws.values.reshape(-1, len(grid))
        estimate = values_.mean(axis=0)
        lower, upper = np.quantile(values_, [(1 - level) / 2, (1 + level) / 2], axis=0)
    out = grid.copy()
    out["estimate"], out["lower"], out["upper"] = estimate, lower, upper
    out.attrs.update({"x": x, "by": by, "level": level, "kind": "fit" if post is None else "posterior"})
    return out


def _grid(result, x: str, by: str | None, values, n: int) -> pd.DataFrame:
    data = result.compiled.data
    c = result.compiled
    used = Evaluator(data).referenced_columns(" ".join([c.formula.fixed, *c.formula.offsets]))
    groups = [t.group for t in c.terms if t.group in data.columns]
    base = {col: _typical(data[col]) for col in dict.fromkeys([*used, *groups])}
    xs = _values(data[x], values, n)
    bys = _by_values(data[by]) if by is not None else [None]
    rows = []
    for b in bys:
        for value in xs:
            row = dict(base)
            row[x] = value
            if by is not None:
                row[by] = b
            rows.append(row)
    grid = pd.DataFrame(rows)
    for col in grid.columns:  # factors keep their levels (and the fit's coding)
        if isinstance(data[col].dtype, pd.CategoricalDtype):
            grid[col] = pd.Categorical(grid[col], categories=data[col].cat.categories, ordered=data[col].cat.ordered)
    return grid


def _typical(column: pd.Series):
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.categories[0]
    if pd.api.types.is_numeric_dtype(column):
        return float(column.mean())
    return min(column.dropna().unique())


def _values(column: pd.Series, values, n: int) -> list:
    if values is not None:
        return list(values)
    if isinstance(column.dtype, pd.CategoricalDtype):
        return list(column.cat.categories)
    if pd.api.types.is_numeric_dtype(column):
        if not isinstance(n, int | np.integer) or n < 2:
            raise ArgumentError(f"n must be an integer of at least 2, got {n!r}")
        return list(np.linspace(column.min(), column.max(), int(n)))
    return sorted(column.dropna().unique())


def _by_values(column: pd.Series) -> list:
    if isinstance(column.dtype, pd.CategoricalDtype):
        return list(column.cat.categories)
    if pd.api.types.is_numeric_dtype(column):
        return list(np.unique(np.quantile(column.dropna(), [0.1, 0.5, 0.9])))
    return sorted(column.dropna().unique())
