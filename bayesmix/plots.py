"""Plots of a fit beside its posterior: forest plot of estimates and caterpillar plot of random effects (matplotlib).

Made to be read on a projector: no text under 10 pt at the default size, legends off the
data, every function returns its Figure and draws into the caller's axes when given ``ax``.
"""

from __future__ import annotations

import numpy as np


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - matplotlib is an optional extra
        raise ImportError("bayesmix.plots needs matplotlib: pip install matplotlib") from exc
    return plt


# Text sizes readable from the back of a lecture room at the default figure size (nothing under 10 pt).
FONT_PT = 11
SMALL_PT = 10
_STYLE = {"font.size": FONT_PT, "axes.titlesize": FONT_PT, "axes.labelsize": FONT_PT,
          "xtick.labelsize": SMALL_PT, "ytick.labelsize": FONT_PT, "legend.fontsize": SMALL_PT,
          "figure.titlesize": FONT_PT + 1}


def _style():
    """matplotlib's rc settings for the duration of one plot (sizes are fixed when text is created)."""
    return _pyplot().rc_context(_STYLE)


def _given_axes(ax, n: int, what: str):
    """The user's axes (one Axes, or a sequence of ``n``) as a flat list, and their figure."""
    from bayesmix.errors import ArgumentError

    axes = list(np.ravel(ax)) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
    if len(axes) != n:
        raise ArgumentError(f"ax: {what} needs {n} axes, got {len(axes)}")
    return axes[0].figure, axes


_PANELS = [("fixed", "Fixed effects"), ("scale", "Standard deviations"), ("corr", "Correlations")]


def forest(result, posterior, ci_prob: float = 0.94, wald_level: float = 0.95, figsize=None, ax=None):
    """Estimates with Wald intervals beside posterior means with HDIs: one axis per parameter.

    Every parameter gets its own horizontal axis, so an intercept near 250 and a slope near 10
    each show their intervals at full width (a shared axis would shrink the slope's to a dot);
    the rows are grouped under "Fixed effects", "Standard deviations" (with σ) and
    "Correlations" (those on [-1, 1]).  ``ax``: a sequence of one Axes per parameter, in the
    table's order (``bm.compare(result, posterior).index``), to draw into your own figure.
    Returns the matplotlib Figure.
    """
    from bayesmix.bayes.compare import compare

    plt = _pyplot()
    table = compare(result, posterior, ci_prob=ci_prob, wald_level=wald_level)
    kinds = table["kind"].replace({"sd": "scale", "sigma": "scale"})
    order = [name for kind, _ in _PANELS for name in table.index[kinds == kind]]
    table, kinds = table.loc[order], kinds.loc[order]
    n = len(table)
    with _style():
        if ax is None:
            height = 1.2 + 1.0 * n
            fig, axes = plt.subplots(n, 1, figsize=figsize or (8.0, height), squeeze=False)
            axes = list(axes[:, 0])
        else:
            fig, axes = _given_axes(ax, n, f"forest of {n} parameters")
        wald_lo, wald_hi = [c for c in table.columns if c.startswith("wald_")]
        hdi_lo, hdi_hi = [c for c in table.columns if c.startswith("hdi")]
        titles = dict(_PANELS)
        for i, (axis, name) in enumerate(zip(axes, table.index)):
            row, kind = table.loc[[name]], kinds.loc[name]
            _forest_row(axis, row, kind, wald_lo, wald_hi, hdi_lo, hdi_hi, result.method, wald_level, ci_prob)
            if i == 0 or kinds.iloc[i - 1] != kind:
                axis.set_title(titles[kind], loc="left", fontweight="bold")
        axes[-1].set_xlabel("value")
        if ax is None:
            fig.suptitle(f"{result.formula_display}: {result.method} fit and posterior")
            # the legend below the panels, where it cannot cover a marker
            handles, labels = axes[0].get_legend_handles_labels()
            fig.legend(handles, labels, loc="lower center", ncol=1, frameon=False)
            fig.tight_layout(rect=(0, 0.65 / fig.get_figheight(), 1, 1), h_pad=0.6)
    return fig


def _forest_row(ax, row, kind, wald_lo, wald_hi, hdi_lo, hdi_hi, method, wald_level, ci_prob):
    """One parameter: the estimate (square, Wald interval for fixed effects) above the posterior (circle, HDI)."""
    ax.errorbar(row["estimate"], [0.15], xerr=_xerr(row["estimate"], row[wald_lo], row[wald_hi]),
                fmt="s", color="tab:blue", capsize=4, ms=7,
                label=f"{method} estimate (fixed effects ± {100 * wald_level:g}% Wald)")
    ax.errorbar(row["mean"], [-0.15], xerr=_xerr(row["mean"], row[hdi_lo], row[hdi_hi]),
                fmt="o", color="tab:orange", capsize=4, ms=7, label=f"posterior mean, {100 * ci_prob:g}% HDI")
    ax.set_yticks([0.0], [_pretty(row.index[0])])
    ax.set_ylim(-0.5, 0.5)
    ax.grid(axis="x", alpha=0.3)
    if kind == "corr":
        ax.set_xlim(-1.05, 1.05)
    elif kind == "scale":
        ax.set_xlim(left=0.0)  # SDs are positive: the distance from zero is part of the message


def _xerr(center, lower, upper):
    lo = np.where(np.isfinite(lower), center - lower, 0.0)
    hi = np.where(np.isfinite(upper), upper - center, 0.0)
    return np.vstack([lo, hi])


def _pretty(name: str) -> str:
    """``sd_Subject[Days]`` -> ``SD Subject: Days``; ``beta[Days]`` -> ``Days``."""
    if name.startswith("beta["):
        return name[5:-1]
    if name == "sigma":
        return "σ (residual)"
    prefix, _, rest = name.partition("_")
    group, _, item = rest.partition("[")
    label = {"sd": "SD", "corr": "corr"}.get(prefix, prefix)
    return f"{label} {group}: {item.rstrip(']')}" if item else f"{label} {group}"


def caterpillar(result, posterior, term: str | None = None, ci_prob: float = 0.94, figsize=None, ax=None):
    """Random effects per level, sorted: posterior mean and HDI, with the fit's conditional modes.

    ``term`` picks one random-effects term by its label (default: the first); one panel per
    column of the term (``ax``: that many Axes of your own).  The legend sits below the
    panels, off the data.  Returns the matplotlib Figure.
    """
    import arviz_stats as azs

    from bayesmix.bayes.pymc_model import term_infos

    plt = _pyplot()
    infos = {i.label: i for i in term_infos(result)}
    label = term if term is not None else next(iter(infos))
    if label not in infos:
        raise ValueError(f"no random-effects term {label!r}; terms: {', '.join(infos)}")
    info = infos[label]
    draws = posterior["posterior"][f"b_{label}"]
    mean = draws.mean(("chain", "draw")).values  # (levels, k)
    hdi = azs.hdi(draws, prob=ci_prob).values  # (levels, k, 2)
    modes = result.ranef[info.group][info.columns].to_numpy() if _unique_group(result, info) else _modes(result, info)
    n = len(info.levels)
    height = 1.6 + 0.24 * n  # 10-pt level names need about 0.2 in each
    with _style():
        if ax is None:
            fig, axes = plt.subplots(1, info.k, figsize=figsize or (4.2 * info.k + 1.2, height), squeeze=False)
            axes = list(axes[0])
        else:
            fig, axes = _given_axes(ax, info.k, f"term {label} with {info.k} column(s)")
        for j, axis in enumerate(axes):
            order = np.argsort(mean[:, j])
            y = np.arange(n)
            axis.hlines(y, hdi[order, j, 0], hdi[order, j, 1], color="tab:orange", lw=2.5, label=f"{100 * ci_prob:g}% HDI")
            axis.plot(mean[order, j], y, "o", color="tab:orange", ms=5, label="posterior mean")
            axis.plot(modes[order, j], y, "x", color="tab:blue", ms=7, mew=2, label=f"conditional mode ({result.method})")
            axis.axvline(0.0, color="grey", lw=0.8)
            axis.set_yticks(y, [info.levels[i] for i in order], fontsize=SMALL_PT)
            axis.set_ylim(-0.7, n - 0.3)
            axis.set_xlabel(f"random effect: {info.columns[j]}")
            axis.set_title(f"{info.group}: {info.columns[j]}")
            axis.grid(axis="x", alpha=0.3)
        axes[0].set_ylabel(f"level of {info.group}")
        if ax is None:
            handles, labels = axes[0].get_legend_handles_labels()
            fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False)
            fig.tight_layout(rect=(0, 0.4 / fig.get_figheight(), 1, 1))
        else:
            axes[0].legend(loc="upper left", bbox_to_anchor=(0.0, -0.12), ncol=3, frameon=False)
    return fig


def _unique_group(result, info) -> bool:
    return sum(1 for i in result.compiled.terms if i.group == info.group) == 1


def _modes(result, info) -> np.ndarray:
    """Conditional modes of one term when its grouping factor has several terms (``||``)."""
    start = sum(t.q for t in result.compiled.terms[: info.index])
    term = result.compiled.terms[info.index]
    return result.b[start : start + term.q].reshape(term.nlevels, term.k)


def predictions(result, post=None, x: str | None = None, by: str | None = None, **kwargs):
    """Conditional effects: the expected response along ``x`` (by ``by``) with Wald or posterior bands
    (:func:`bayesmix.plots_predictions.plot_predictions`)."""
    from bayesmix.plots_predictions import plot_predictions

    return plot_predictions(result, post, x=x, by=by, **kwargs)
