"""Posterior distributions of the ICC and Nakagawa–Schielzeth R²: the formulas of
:mod:`bayesmix.results.icc_r2` applied to every draw of β, the term covariances and σ.

The Poisson distribution variance uses the frequentist null model's intercept (as performance
does for a fit), so only the parameters of the model itself vary with the draws.
"""

from __future__ import annotations

import numpy as np

from bayesmix.bayes.pymc_model import term_infos
from bayesmix.results.icc_r2 import components, icc_table, null_intercept, r2_values


def _draws(post, name: str) -> np.ndarray:
    values = np.asarray(post["posterior"][name].values, dtype=float)
    return values.reshape(-1, *values.shape[2:])


def posterior_components(result, post) -> dict:
    covs = []
    for info in term_infos(result):
        sd = _draws(post, f"sd_{info.label}")
        L = sd[:, :, None] * _draws(post, f"corr_chol_{info.label}") if info.k > 1 else sd[:, :, None]
        covs.append(L @ np.swapaxes(L, -1, -2))
    sigma = _draws(post, "sigma") if result.has_scale else None
    return components(result, _draws(post, "beta"), covs, sigma, null_intercept(result))


def posterior_icc(result, post):
    """Per draw: ``ICC_adjusted`` and ``ICC_conditional`` (dims chain, draw, group; group "(all)" first)."""
    import xarray as xr

    rows = icc_table(result, posterior_components(result, post))
    shape = (post["posterior"].sizes["chain"], post["posterior"].sizes["draw"])
    adjusted = np.stack([a for a, _ in rows.values()], axis=-1).reshape(*shape, -1)
    conditional = np.stack([c for _, c in rows.values()], axis=-1).reshape(*shape, -1)
    dims = ("chain", "draw", "group")
    return xr.Dataset({"ICC_adjusted": (dims, adjusted), "ICC_conditional": (dims, conditional)},
                      coords={"group": list(rows), "chain": post["posterior"]["chain"].values,
                              "draw": post["posterior"]["draw"].values})


def posterior_r2(result, post):
    """Per draw: ``R2_marginal`` and ``R2_conditional`` (dims chain, draw)."""
    import xarray as xr

    marginal, conditional = r2_values(posterior_components(result, post))
    shape = (post["posterior"].sizes["chain"], post["posterior"].sizes["draw"])
    dims = ("chain", "draw")
    return xr.Dataset({"R2_marginal": (dims, marginal.reshape(shape)),
                       "R2_conditional": (dims, conditional.reshape(shape))},
                      coords={"chain": post["posterior"]["chain"].values, "draw": post["posterior"]["draw"].values})
