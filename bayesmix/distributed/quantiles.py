"""Exact quantiles of a Dask Series (``np.quantile``'s linear rule) in a few passes, no column on the client.

Dask's own ``quantile`` is approximate.  Here a first pass gives the count and Dask's
approximate quantiles on a fine grid; each order statistic the requested quantiles need is
then bracketed between two grid values, and one more pass counts the values below each
bracket and brings back only the values inside it (a fraction of a percent of the rows).
The count below tells which of them is the order statistic; should Dask's approximation
have missed, the bracket is widened and the pass repeated.
"""

from __future__ import annotations

import numpy as np

from bayesmix.distributed.passes import tree_reduce

_GRID = np.linspace(0.0, 1.0, 1001)
_WIDTHS = (2, 10, 100, len(_GRID))  # bracket half-widths tried, in grid steps


def exact_quantiles(series, probs) -> np.ndarray:
    """``np.quantile(series.compute(), probs)`` without computing the series on the client."""
    import dask

    n, grid = dask.compute(series.count(), series.quantile(_GRID))
    n, grid = int(n), np.asarray(grid, dtype=float)
    position = (n - 1) * np.asarray(probs, dtype=float)
    ranks = sorted({int(r) for h in position for r in (np.floor(h), np.ceil(h))})
    found: dict[int, float] = {}
    for width in _WIDTHS:
        missing = [k for k in ranks if k not in found]
        if not missing:
            break
        brackets = [_bracket(k, n, grid, width) for k in missing]
        (below, inside), _ = tree_reduce(series, _count_and_collect, _combine, brackets)
        for k, lo, values in zip(missing, below, inside):
            values = np.sort(values)
            if lo <= k < lo + len(values):
                found[k] = float(values[k - lo])
    low, high = np.floor(position).astype(int), np.ceil(position).astype(int)
    return np.array([_lerp(found[a], found[b], h - a) for h, a, b in zip(position, low, high)])


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's interpolation between neighbouring order statistics, to the last bit."""
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


def _bracket(rank: int, n: int, grid: np.ndarray, width: int) -> tuple[float, float]:
    """Grid values around the approximate value of the order statistic ``rank``; the ends are open."""
    at = int(round(rank / max(n - 1, 1) * (len(grid) - 1)))
    lo, hi = at - width, at + width
    return (-np.inf if lo <= 0 else grid[lo], np.inf if hi >= len(grid) - 1 else grid[hi])


def _count_and_collect(part, brackets):
    values = np.asarray(part, dtype=float)
    values = values[~np.isnan(values)]
    below = np.array([np.count_nonzero(values < lo) for lo, _ in brackets])
    inside = [values[(values >= lo) & (values <= hi)] for lo, hi in brackets]
    return below, inside


def _combine(*parts):
    below = sum(p[0] for p in parts)
    inside = [np.concatenate(arrays) for arrays in zip(*(p[1] for p in parts))]
    return below, inside
