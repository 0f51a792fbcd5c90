"""Plots of a fit beside its posterior: forest plot of estimates and caterpillar plot of random effects (matplotlib)."""

from __future__ import annotations

import numpy as np


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - matplotlib is an optional extra
        raise ImportError("bayesmix.plots needs matplotlib: pip install matplotlib") from exc
    return plt


def forest(result, posterior, ci_prob: float = 0.94, wald_level: float = 0.95, figsize=None):
    """Estimates with Wald intervals beside posterior means with HDIs, one panel per kind of parameter.

    Fixed effects, random-effect SDs (with σ) and correlations get their own panels, each on its
    own scale.  Returns the matplotlib Figure.
    """
    from bayesmix.bayes.compare import compare

    plt = _pyplot()
    table = compare(result, posterior, ci_prob=ci_prob, wald_level=wald_level)
    panels = [("fixed", "Fixed effects"), ("scale", "Standard deviations"), ("corr", "Correlations")]
    kinds = table["kind"].replace({"sd": "scale", "sigma": "scale"})
    present = [(k, title) for k, title in panels if (kinds == k).any()]
    heights = [max(1, int((kinds == k).sum())) for k, _ in present]
    fig, axes = plt.subplots(len(present), 1, figsize=figsize or (7.5, 1.2 + 0.45 * sum(heights) + 0.6 * len(present)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    wald_lo, wald_hi = [c for c in table.columns if c.startswith("wald_")]
    hdi_lo, hdi_hi = [c for c in table.columns if c.startswith("hdi")]
    for ax, (kind, title) in zip(axes[:, 0], present):
        rows = table[kinds == kind]
        y = np.arange(len(rows))[::-1].astype(float)
        ax.errorbar(rows["estimate"], y + 0.15, xerr=_xerr(rows["estimate"], rows[wald_lo], rows[wald_hi]),
                    fmt="s", color="tab:blue", capsize=3, label=f"{result.method} estimate"
                    + (f" ± {100 * wald_level:g}% Wald" if kind == "fixed" else ""))
        ax.errorbar(rows["mean"], y - 0.15, xerr=_xerr(rows["mean"], rows[hdi_lo], rows[hdi_hi]),
                    fmt="o", color="tab:orange", capsize=3, label=f"posterior mean, {100 * ci_prob:g}% HDI")
        ax.set_yticks(y, [_pretty(name) for name in rows.index])
        ax.set_ylim(-0.6, len(rows) - 0.4)  # room for the offset markers in one-row panels
        ax.set_title(title, loc="left", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        if kind == "corr":
            ax.set_xlim(-1.05, 1.05)
    axes[-1, 0].set_xlabel("value")
    fig.suptitle(f"{result.formula_display}: {result.method} fit and posterior", fontsize=11)
    # the legend below the panels, where it cannot cover a marker
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


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


def caterpillar(result, posterior, term: str | None = None, ci_prob: float = 0.94, figsize=None):
    """Random effects per level, sorted: posterior mean and HDI, with the fit's conditional modes.

    ``term`` picks one random-effects term by its label (default: the first); one panel per
    column of the term.  Returns the matplotlib Figure.
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
    fig, axes = plt.subplots(1, info.k, figsize=figsize or (3.6 * info.k + 1.0, 1.0 + 0.22 * n), squeeze=False,
                             sharey=False)
    for j, ax in enumerate(axes[0]):
        order = np.argsort(mean[:, j])
        y = np.arange(n)
        ax.hlines(y, hdi[order, j, 0], hdi[order, j, 1], color="tab:orange", lw=2, label=f"{100 * ci_prob:g}% HDI")
        ax.plot(mean[order, j], y, "o", color="tab:orange", ms=4, label="posterior mean")
        ax.plot(modes[order, j], y, "x", color="tab:blue", ms=5, label=f"conditional mode ({result.method})")
        ax.axvline(0.0, color="grey", lw=0.8)
        ax.set_yticks(y, [info.levels[i] for i in order], fontsize=7 if n > 30 else 8)
        ax.set_xlabel(f"random effect: {info.columns[j]}")
        ax.set_title(f"{info.group}: {info.columns[j]}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_ylabel(f"level of {info.group}")
    axes[0, 0].legend(loc="lower right", fontsize=7)
    fig.tight_layout()
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
