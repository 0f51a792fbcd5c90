"""lme4's ``glmer.nb``: the negative-binomial shape θ estimated around glmer fits (``est_theta``, ``optTheta``).

The steps are lme4 1.1-31's: a Poisson glmer; θ₀ by MASS's ``theta.ml`` given that fit's
fitted means; then θ by minimizing the Laplace deviance of the glmer fit at fixed θ over
``log θ ∈ log θ₀ ± 3`` with Brent's method (R's ``optimize``, tolerance 5e-5 on log θ), every
evaluation a full glmer fit with ``negative.binomial(θ)``.  The answer is the fit at the best θ.

When to trust it: θ is a profile maximum-likelihood estimate, so the fixed effects' standard
errors do not carry θ's uncertainty (as in lme4); a θ at the edge of the search interval, or
θ₀ running off (``theta.ml``'s warnings), mean the counts show little overdispersion: compare
with the Poisson fit.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import digamma, polygamma

from bayesmix.engine.families import NegativeBinomial
from bayesmix.engine.glmm import GlmmFit, fit_glmm
from bayesmix.errors import ConvergenceWarning, warn


@dataclass
class NbFit:
    """glmer.nb's result: θ, the family at θ, the glmer fit at θ and the record of the search."""

    theta: float
    family: NegativeBinomial
    fit: GlmmFit
    theta_start: float  # est_theta on the Poisson fit
    interval: tuple[float, float]  # the search interval on log θ
    evaluations: int  # glmer fits during the search (lme4's attr(m, "nevals"))


def theta_ml(y, mu, weights, limit: int = 10, eps: float = np.finfo(float).eps ** 0.25) -> tuple[float, float]:
    """MASS's ``theta.ml``: the ML shape θ given the means (Newton-Raphson on its score); (θ, SE)."""
    y, mu, w = (np.asarray(a, dtype=float) for a in (y, mu, weights))
    n = w.sum()

    def score(th):
        return np.sum(w * (digamma(th + y) - digamma(th) + np.log(th) + 1 - np.log(th + mu) - (y + th) / (mu + th)))

    def info(th):
        return np.sum(w * (-polygamma(1, th + y) + polygamma(1, th) - 1 / th + 2 / (mu + th)
                           - (y + th) / (mu + th) ** 2))

    t0 = n / np.sum(w * (y / mu - 1) ** 2)
    it, delta, i = 0, 1.0, np.nan
    while (it := it + 1) < limit and abs(delta) > eps:
        t0 = abs(t0)
        i = info(t0)
        delta = score(t0) / i
        t0 = t0 + delta
    if t0 < 0:
        t0 = 0.0
        warn("theta.ml: the estimate of the negative-binomial theta was truncated at zero", ConvergenceWarning)
    if it == limit:
        warn("theta.ml: iteration limit reached estimating the negative-binomial theta", ConvergenceWarning)
    return float(t0), float(np.sqrt(1.0 / i)) if i > 0 else np.nan


def fit_glmer_nb(compiled, poisson_fit: GlmmFit, link: str = "log", nAGQ: int = 1, tol: float = 5e-5,
                 interval: tuple[float, float] | None = None, theta_start: float | None = None) -> NbFit:
    """glmer.nb's search for θ from a Poisson glmer fit of the same model (lme4's est_theta + optTheta)."""
    if theta_start is None:
        mu = poisson_fit.state.mu
        theta_start, _ = theta_ml(compiled.y, mu, compiled.weights, limit=20, eps=2 * tol)
    if interval is None:
        interval = (np.log(theta_start) - 3.0, np.log(theta_start) + 3.0)
    fits: dict[float, GlmmFit] = {}
    caught: dict[float, list] = {}

    def deviance(log_theta: float) -> float:
        family = NegativeBinomial(np.exp(log_theta), link, estimated=True)
        # as lme4's optTheta: each fit's warnings are kept, and only those of the fit returned are issued
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            fits[log_theta] = fit_glmm(compiled, family, nAGQ=nAGQ)
        caught[log_theta] = record
        crit = fits[log_theta].criterion
        return float(crit) if np.isfinite(crit) else np.inf

    # scipy's bounded Brent is R's optimize (Brent's fmin): the same tolerance rule, tol1 = √ε|x| + tol/3
    best = minimize_scalar(deviance, bounds=interval, method="bounded", options={"xatol": tol})
    if best.x not in fits:
        deviance(best.x)
    theta = float(np.exp(best.x))
    for record in caught[best.x]:
        warn(str(record.message), record.category)
    if min(best.x - interval[0], interval[1] - best.x) < 10 * tol:
        warn(f"glmer_nb: theta = {theta:.6g} is at the edge of its search interval "
             f"[{np.exp(interval[0]):.6g}, {np.exp(interval[1]):.6g}]; the counts may show little overdispersion "
             "(compare with the Poisson fit) or need a wider interval", ConvergenceWarning)
    return NbFit(theta, NegativeBinomial(theta, link, estimated=True), fits[best.x], float(theta_start),
                 (float(interval[0]), float(interval[1])), len(fits))
