"""Drawing a profile (lme4's ``xyplot(thpr)``): the one inference module that imports matplotlib."""

from __future__ import annotations

import math

import numpy as np

from bayesmix.errors import ArgumentError

_STYLE = {"font.size": 11, "axes.titlesize": 11, "axes.labelsize": 11, "xtick.labelsize": 10,
          "ytick.labelsize": 10, "legend.fontsize": 10}  # readable on a projector: nothing under 10 pt


def plot_profile(profile, ax=None, level: float = 0.95, **kwargs):
    """ζ against each parameter, one panel per parameter, with the ±z lines of ``level`` (default 95%).

    ``ax``: one Axes per profiled parameter to draw into; else a new figure (``kwargs`` go to
    ``plt.subplots``).  Returns the Figure.
    """
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    params = list(dict.fromkeys(profile["parameter"]))
    z = norm.ppf(0.5 + level / 2)
    with plt.rc_context(_STYLE):
        if ax is None:
            ncol = min(3, len(params))
            nrow = math.ceil(len(params) / ncol)
            kwargs.setdefault("figsize", (4.2 * ncol, 3.2 * nrow))
            fig, grid = plt.subplots(nrow, ncol, squeeze=False, **kwargs)
            axes = list(grid.ravel())
        else:
            axes = list(np.ravel(ax)) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
            if len(axes) < len(params):
                raise ArgumentError(f"ax: the profile has {len(params)} parameters, got {len(axes)} axes")
            fig = axes[0].figure
        for axis, name in zip(axes, params):
            part = profile[profile["parameter"] == name]
            axis.plot(part["value"], part["zeta"], "o-", ms=4)
            axis.axhline(0, color="grey", lw=0.6)
            for q in (-z, z):
                axis.axhline(q, color="grey", lw=0.8, ls="--")
            axis.set_title(name)
            axis.set_ylabel("ζ")
        for axis in axes[len(params):]:
            axis.set_visible(False)
        if ax is None:
            fig.tight_layout()
    return fig
