"""Intraclass correlation and Nakagawa–Schielzeth R² (R's performance package: ``icc()``, ``r2_nakagawa()``).

The variance components are insight's ``get_variance`` (insight 0.19 / performance 0.10.2):

* fixed: ``var(X β)`` (R's ``var``, n − 1);
* random: per term the mean over rows of ``z_i' Σ z_i`` (Johnson 2014; a random intercept's
  variance for intercept-only terms), summed over terms — a scalar term with one level per
  row in a GLMM is an observation-level effect: its variance is the *dispersion* instead;
* distribution: σ² (LMM); π²/3 (binomial logit), 1 (probit), π²/6 (cloglog);
  ``log(1 + 1/exp(β₀))`` (Poisson log) with β₀ the intercept of the *null model* — the fit
  refitted with an intercept only and the same random terms, as performance does;
* residual: distribution + dispersion.

``ICC_adjusted = random / (random + residual)``, ``ICC_conditional = random / (fixed + random +
residual)``, ``R2_marginal = fixed / total``, ``R2_conditional = (fixed + random) / total``.  Per
grouping factor, each term's variance replaces the total random variance in the numerator
(performance's ``icc(by_group = TRUE)``).  The functions are vectorised over draws, so the
same formulas give the posterior distributions (``bayesmix.bayes.variance``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd


def observation_level(result) -> list[bool]:
    """Which terms are observation-level effects (a scalar term with one level per row, GLMMs only)."""
    return [not result.is_lmm and t.k == 1 and t.nlevels == result.nobs for t in result.compiled.terms]


def components(result, beta: np.ndarray, covs: list[np.ndarray], sigma, null_intercept=None) -> dict:
    """Variance components per draw: ``beta`` (draws, p), ``covs`` per term (draws, k, k), ``sigma`` (draws,)."""
    fitted = beta @ result.compiled.X.T
    fixed = np.var(fitted, axis=1, ddof=1)
    per_term = [np.mean(np.einsum("ik,dkl,il->di", t.columns, cov, t.columns), axis=1)
                for t, cov in zip(result.compiled.terms, covs)]
    obs = observation_level(result)
    random = sum((v for v, o in zip(per_term, obs) if not o), np.zeros_like(fixed))
    dispersion = sum((v for v, o in zip(per_term, obs) if o), np.zeros_like(fixed))
    distribution = _distribution_variance(result, sigma, null_intercept) * np.ones_like(fixed)
    return {"fixed": fixed, "random": random, "per_term": per_term, "observation_level": obs,
            "distribution": distribution, "dispersion": dispersion, "residual": distribution + dispersion}


def _distribution_variance(result, sigma, null_intercept):
    if result.is_lmm:
        return np.asarray(sigma, dtype=float) ** 2
    return result.family.distribution_variance(null_intercept)


def null_intercept(result) -> float | None:
    """β₀ of the null model (intercept only, same random terms and family): Poisson GLMMs only."""
    if result.is_lmm or not result.family.needs_null_intercept:
        return None
    from bayesmix.engine.glmm import fit_glmm

    c = result.compiled
    null = replace(c, X=np.ones((c.n, 1)), fixef_names=["(Intercept)"], dropped_fixef=[])
    family = type(result.family)(result.family.link.name)
    return float(fit_glmm(null, family, nAGQ=1).beta[0])


def icc_table(result, parts: dict) -> pd.DataFrame:
    """ICC_adjusted and ICC_conditional, overall and per grouping factor (rows; draws along columns' arrays)."""
    denominator_adj = parts["random"] + parts["residual"]
    denominator_cond = parts["fixed"] + denominator_adj
    rows = {"(all)": (parts["random"] / denominator_adj, parts["random"] / denominator_cond)}
    for label, v, obs in zip(result.group_labels(), parts["per_term"], parts["observation_level"]):
        if not obs:
            rows[label] = (v / denominator_adj, v / denominator_cond)
    return rows


def r2_values(parts: dict) -> tuple[np.ndarray, np.ndarray]:
    total = parts["fixed"] + parts["random"] + parts["residual"]
    return parts["fixed"] / total, (parts["fixed"] + parts["random"]) / total


def fit_components(result) -> dict:
    sigma = np.array([result.sigma]) if result.has_scale else None
    return components(result, result.beta_values[None, :], [c[None] for c in result.term_covariances()], sigma,
                      null_intercept(result))


def icc(result) -> pd.DataFrame:
    """performance's ``icc()``: adjusted and conditional ICC, overall (row "(all)") and per grouping factor."""
    rows = icc_table(result, fit_components(result))
    return pd.DataFrame({"ICC_adjusted": [float(a[0]) for a, _ in rows.values()],
                         "ICC_conditional": [float(c[0]) for _, c in rows.values()]}, index=list(rows))


def r2(result) -> pd.Series:
    """performance's ``r2_nakagawa()``: marginal (fixed effects) and conditional (fixed + random) R²."""
    marginal, conditional = r2_values(fit_components(result))
    return pd.Series({"R2_marginal": float(marginal[0]), "R2_conditional": float(conditional[0])})
