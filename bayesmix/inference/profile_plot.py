"""Drawing a profile (lme4's ``xyplot(thpr)``): the one inference module that imports matplotlib."""

from __future__ import annotations

import math


def plot_profile(profile, **kwargs):
    """ζ against each parameter, one panel per parameter, with the 95% lines."""
    import matplotlib.pyplot as plt

    params = list(dict.fromkeys(profile["parameter"]))
    ncol = min(3, len(params))
    nrow = math.ceil(len(params) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 3 * nrow), squeeze=False, **kwargs)
    for ax, name in zip(axes.ravel(), params):
        part = profile[profile["parameter"] == name]
        ax.plot(part["value"], part["zeta"], "o-", ms=3)
        ax.axhline(0, color="grey", lw=0.5)
        for q in (-1.96, 1.96):
            ax.axhline(q, color="grey", lw=0.5, ls="--")
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("ζ")
    for ax in axes.ravel()[len(params) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig
