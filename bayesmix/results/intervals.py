"""Frequentist intervals for predictions: Wald confidence intervals from vcov(β) and prediction intervals
by simulation (the idiom of lme4's FAQ and merTools' ``predictInterval``), and the family's response
simulation they share with the posterior predictive draws.

* ``interval="confidence"``: the uncertainty of the fixed part, ``x'Vx`` (Bolker's GLMM FAQ: lme4
  has no standard errors for conditional predictions); on the response scale the link-scale
  interval's endpoints are transformed, so it stays inside the response's range.
* ``interval="prediction"``: ``nsim`` simulations of a new observation with β ~ N(β̂, V), each seen
  level's effects ~ N(b̂, condVar) (lme4's conditional variances), unseen levels' effects ~ N(0, Σ̂) and the
  family's noise at σ̂; the interval is the simulations' quantiles.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesmix.errors import ArgumentError
from bayesmix.results.newdesign import new_design, training_design
from bayesmix.results.predict import terms_in


def simulate_response(result, mu: np.ndarray, sigma, weights: np.ndarray, rng, families=None) -> np.ndarray:
    """Responses drawn from the family given the mean ``mu`` (draws, rows) and σ (per draw, or None);
    binomial ones as success counts out of ``weights`` trials (the family draws proportions).
    ``families``: one family per draw, for families with sampled parameters (a glmer_nb posterior's θ)."""
    family = result.response_family
    scale = 1.0 if sigma is None else np.asarray(sigma, dtype=float)[:, None]
    if families is None:
        y = family.simulate(mu, weights, scale, rng)
    else:
        y = np.stack([f.simulate(m, weights, 1.0, rng) for f, m in zip(families, mu)])
    return np.round(y * np.round(weights)) if family.response_is_probability else y


def predict_interval(result, newdata=None, re_form=None, type: str = "response", interval: str = "confidence",
                     level: float = 0.95, nsim: int = 1000, seed=None) -> pd.DataFrame:
    """``fit``, ``lwr``, ``upr`` per row (R's ``predict.lm`` columns); ``fit`` is ``result.predict(newdata, re_form, type)``."""
    from scipy.stats import norm

    if interval not in ("confidence", "prediction"):
        raise ArgumentError(f"interval must be 'confidence' or 'prediction', got {interval!r}")
    if not 0.0 < level < 1.0:
        raise ArgumentError(f"level must lie in (0, 1), got {level!r}")
    if type not in ("response", "link"):
        raise ArgumentError(f"type must be 'response' or 'link', got {type!r}")
    design = training_design(result) if newdata is None else new_design(result, newdata, re_form)
    eta = result.predict(newdata, re_form=re_form, type="link")
    index = design.index
    fit = result.predict(newdata, re_form=re_form, type=type)
    if interval == "confidence":
        se = np.sqrt(np.einsum("ij,jk,ik->i", design.X, result.vcov_values, design.X))
        z = norm.ppf(0.5 + level / 2)
        lo, hi = eta - z * se, eta + z * se
        if type == "response":
            lo, hi = np.sort(np.stack([result._inverse_link(lo), result._inverse_link(hi)]), axis=0)
        return pd.DataFrame({"fit": fit, "lwr": lo, "upr": hi, "se_fit": se}, index=index)
    if type == "link":
        raise ArgumentError("prediction intervals are for new observations: use type='response'")
    sims = _simulated_responses(result, design, terms_in(result.compiled.terms, re_form), nsim, seed)
    lo, hi = np.quantile(sims, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return pd.DataFrame({"fit": fit, "lwr": lo, "upr": hi}, index=index)


def _simulated_responses(result, design, wanted: set[int], nsim: int, seed) -> np.ndarray:
    if not isinstance(nsim, int | np.integer) or nsim < 2:
        raise ArgumentError(f"nsim must be an integer of at least 2, got {nsim!r}")
    rng = np.random.default_rng(seed)
    beta = rng.multivariate_normal(result.beta_values, result.vcov_values, size=nsim, method="cholesky")
    eta = beta @ design.X.T + design.offset
    condvar = result.ranef_condvar()
    for i, (label, term, cov, block) in enumerate(zip(result.group_labels(), result.compiled.terms,
                                                       result.term_covariances(), _blocks(result))):
        if i not in wanted:
            continue
        rows, z = design.rows[i], design.z[i]
        seen = rows >= 0
        b = np.broadcast_to(block, (nsim, *block.shape)).copy()
        chol = np.linalg.cholesky(condvar[label] + 1e-12 * np.eye(term.k))  # b | y ~ N(b̂, condVar)
        b += np.einsum("lab,dlb->dla", chol, rng.standard_normal(b.shape))
        eta[:, seen] += np.einsum("dnk,nk->dn", b[:, rows[seen]], z[seen])
        unseen = ~seen & design.is_new(i)
        if unseen.any():  # a new level: its effects from the fitted N(0, Σ̂), one per level and simulation
            levels, which = np.unique(design.new_levels[i][unseen].astype(str), return_inverse=True)
            chol = np.linalg.cholesky(cov + 1e-12 * np.eye(term.k))
            new = np.einsum("ab,dlb->dla", chol, rng.standard_normal((nsim, len(levels), term.k)))
            eta[:, unseen] += np.einsum("dnk,nk->dn", new[:, which], z[unseen])
    mu = result.response_family.link.linkinv(eta)
    weights = np.ones(eta.shape[1])
    sigma = np.full(nsim, result.sigma) if result.has_scale else None
    return simulate_response(result, mu, sigma, weights, rng)


def _blocks(result):
    from bayesmix.spec.terms import effect_blocks

    return effect_blocks(result.compiled.terms, result.b)
