"""Plot of conditional effects (``bm.plot_predictions``): the table of :func:`bayesmix.predictions` as
lines with interval bands, one line per value of ``by`` (matplotlib)."""

from __future__ import annotations

import numpy as np


def plot_predictions(result, post=None, x: str | None = None, by: str | None = None, *, ax=None, **kwargs):
    """Expected response along ``x`` (by ``by``) with Wald (fit) or posterior (``post``) bands; returns the Axes.

    Keyword arguments go to :func:`bayesmix.predictions` (``values``, ``n``, ``level``, ``re_form``).
    """
    import matplotlib.pyplot as plt

    from bayesmix.results.conditional import predictions

    table = predictions(result, post, x=x, by=by, **kwargs)
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4.0))
    groups = [(None, table)] if by is None else list(table.groupby(by, observed=True, sort=False))
    numeric = np.issubdtype(np.asarray(table[x]).dtype, np.number)
    for i, (value, rows) in enumerate(groups):
        label = None if by is None else f"{by} = {value}"
        if numeric:
            line = ax.plot(rows[x], rows["estimate"], label=label)[0]
            ax.fill_between(rows[x], rows["lower"], rows["upper"], alpha=0.25, color=line.get_color())
        else:
            positions = np.arange(len(rows)) + 0.15 * (i - (len(groups) - 1) / 2)
            ax.errorbar(positions, rows["estimate"], yerr=[rows["estimate"] - rows["lower"], rows["upper"] - rows["estimate"]],
                        fmt="o", capsize=3, label=label)
            ax.set_xticks(np.arange(len(rows)), [str(v) for v in rows[x]])
    what = "posterior mean" if post is not None else f"{result.method} estimate"
    interval = "posterior" if post is not None else "Wald"
    ax.set_xlabel(x)
    ax.set_ylabel(f"expected {result.compiled.formula.response}")
    ax.set_title(f"{what} with {100 * table.attrs['level']:g}% {interval} interval")
    if by is not None:
        ax.legend(frameon=False)
    return ax
