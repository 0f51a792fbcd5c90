"""Exact restricted likelihood-ratio test for one variance component (RLRsim's ``exactRLRT``).

Crainiceanu & Ruppert (2004): in a linear mixed model with one variance component
(``y = Xβ + Zb + ε``, ``b ~ N(0, λσ²Σ)``), the null distribution of the RLRT statistic
for ``λ = 0`` depends only on the eigenvalues μ of ``Σ^½ Z'(I − P_X) Z Σ^½``:

    RLRT = sup_λ { (n − p) log(1 + N(λ)/D(λ)) − Σ_s log(1 + λ μ_s) },
    N(λ) = Σ_s λ μ_s w_s / (1 + λ μ_s),  D(λ) = Σ_s w_s / (1 + λ μ_s) + w_0,

with ``w_s ~ χ²₁`` and ``w_0 ~ χ²_{n−p−K}`` independent.  It is simulated exactly
as RLRsim simulates it (the same λ grid and the same search for the first local
maximum along it), so only the random numbers differ.

When to trust it: it is exact (up to Monte-Carlo error) for a model with a single
variance component besides the residual, and it is the test to use there — the
χ²-based LRT is conservative for a variance on its boundary.  With further variance
components (``m_alt``, ``m0`` given) it is an approximation that simulation studies
(Greven et al. 2008) found accurate unless the nuisance components are tiny.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bayesmix.errors import BayesmixWarning, warn
from bayesmix.inference._common import InferenceError, message, require_lmm
from bayesmix.results.varcorr import sd_and_corr


@dataclass
class RLRTResult:
    """RLRsim's ``htest``: the observed statistic, its p-value and the simulated null sample."""

    statistic: float
    p_value: float
    sample: np.ndarray
    nsim: int

    @property
    def method(self) -> str:
        return f"simulated finite sample distribution of RLRT (p-value based on {self.nsim} simulated values)"

    def __repr__(self) -> str:
        return (f"\n\t{self.method}\n\nRLRT = {self.statistic:.5g}, p-value = {self.p_value:.4g}\n")


def exact_rlrt(m, m_alt=None, m0=None, nsim: int = 10000, seed=None, log_grid_hi: float = 8.0,
               log_grid_lo: float = -10.0, gridlength: int = 200) -> RLRTResult:
    """Test that a random-effect variance is zero, by RLRsim's ``exactRLRT(m, mA, m0)``.

    * One variance component: ``exact_rlrt(m)`` with ``m`` an LMM whose only random
      effect is one scalar term, e.g. ``lmer("y ~ x + (1 | g)")``; the null model is the
      linear model with the same fixed effects.
    * Several: ``m`` holds only the random effect to test, ``m_alt`` is the full model
      and ``m0`` the model without that effect (same fixed effects, one variance parameter
      fewer); the statistic is ``2 (REML logLik(m_alt) − REML logLik(m0))``.

    The p-value is the fraction of the ``nsim`` simulated statistics above the observed one.
    """
    require_lmm(m, "the exact restricted likelihood-ratio test")
    if not isinstance(nsim, (int, np.integer)) or nsim < 1:
        raise InferenceError(f"nsim must be a positive integer, got {nsim!r}")
    if (m_alt is None) != (m0 is None):
        raise InferenceError("give both m_alt (the full model) and m0 (the model without the tested effect), or neither")
    _check_unweighted(m)
    if not m.REML:
        message("Using restricted likelihood evaluated at ML estimators.\nRefit with REML=True for exact results.")
    if m_alt is None:
        if len(m.compiled.terms) != 1 or m.compiled.terms[0].k != 1:
            raise InferenceError(
                "multiple random effects in the model: exact_rlrt(m) needs m with a single scalar random effect "
                "such as (1 | g). For a model with several, pass m (only the tested effect), m_alt and m0.")
        observed = max(0.0, _reml_criterion_lm(m) - _reml_criterion(m))
    else:
        observed = _observed_multi(m, m_alt, m0)
    if observed == 0.0:
        return RLRTResult(0.0, 1.0, np.zeros(0), int(nsim))
    sample = rlrt_null_sample(m, nsim, seed, log_grid_hi, log_grid_lo, gridlength)
    if np.quantile(sample, 0.9) == 0:
        warn(f"Null distribution has mass {np.mean(sample == 0):.3g} at zero.", BayesmixWarning)
    return RLRTResult(observed, float(np.mean(observed < sample)), sample, int(nsim))


def _check_unweighted(m) -> None:
    if not np.allclose(m.compiled.weights, 1.0):
        raise InferenceError("exact_rlrt needs i.i.d. errors; this model has prior weights")


def _reml_criterion(model) -> float:
    """-2 × REML log-likelihood at the model's θ (for an ML fit: evaluated at the ML estimates)."""
    if model.REML:
        return model.criterion_value
    from bayesmix.engine.lmm import ProfiledDeviance

    c = model.compiled
    dev = ProfiledDeviance(c.terms, c.X, c.y - c.offset, c.weights, reml=True)
    return float(dev(model.theta_values))


def _reml_criterion_lm(model) -> float:
    """-2 × REML log-likelihood of the linear model without random effects (RLRsim's ``reml.H0``)."""
    c = model.compiled
    X, y = c.X, c.y - c.offset
    n, p = X.shape
    q, r = np.linalg.qr(X)
    rss = float(np.sum((y - q @ (q.T @ y)) ** 2))
    log_det_xtx = 2.0 * np.sum(np.log(np.abs(np.diag(r))))
    nmp = n - p
    return nmp * np.log(2 * np.pi) + nmp * np.log(rss) + log_det_xtx + nmp - nmp * np.log(nmp)


def _observed_multi(m, m_alt, m0) -> float:
    for model, name in ((m_alt, "m_alt"), (m0, "m0")):
        require_lmm(model, "the exact restricted likelihood-ratio test")
    if m_alt.compiled.X.shape != m0.compiled.X.shape or not np.allclose(m_alt.compiled.X, m0.compiled.X):
        raise InferenceError("Fixed effects structures of m_alt and m0 not identical: REML-based inference not appropriate.")
    if not np.allclose(m_alt.compiled.y, m0.compiled.y) or not np.allclose(m.compiled.y, m0.compiled.y):
        raise InferenceError("m, m_alt and m0 must be fitted to the same response")
    if abs(m_alt.df - m0.df) != 1:
        raise InferenceError(
            "Random effects not independent - covariance(s) set to 0 under H0: exact_rlrt can only test a single "
            f"variance (m_alt and m0 differ by {abs(m_alt.df - m0.df)} parameters)")
    if len(m.compiled.terms) != 1:
        raise InferenceError("m must contain only the random effect that is tested (one random-effects term)")
    return max(0.0, 2.0 * (-0.5 * _reml_criterion(m_alt) + 0.5 * _reml_criterion(m0)))


def _eigenvalues(m) -> np.ndarray:
    """μ: squared singular values of Σ^½ Z'(I − P_X), normalized to a maximum of 1 (RLRsim)."""
    c = m.compiled
    term = c.terms[0]
    Z = term.z_matrix().toarray()
    cov = m.term_covariances()[0]
    sd, corr = sd_and_corr(cov)
    if not np.all(sd > 0):  # a zero SD leaves the correlation undefined; RLRsim takes it as none
        corr = np.eye(term.k)
    sqrt_sigma = np.kron(np.eye(term.nlevels), np.linalg.cholesky(corr).T)  # R's chol(): upper triangular
    q, _ = np.linalg.qr(c.X)
    resid = Z - q @ (q.T @ Z)
    mu = np.linalg.svd(sqrt_sigma @ resid.T, compute_uv=False) ** 2
    return mu / mu.max()


def rlrt_null_sample(m, nsim: int = 10000, seed=None, log_grid_hi: float = 8.0, log_grid_lo: float = -10.0,
                     gridlength: int = 200) -> np.ndarray:
    """RLRsim's ``RLRTSim``: draws from the finite-sample null distribution of the RLRT statistic."""
    c = m.compiled
    n, p = c.X.shape
    mu = _eigenvalues(m)
    K = len(mu)
    lam = np.concatenate([[0.0], np.exp(np.linspace(log_grid_lo, log_grid_hi, gridlength - 1))])
    lam_mu = np.outer(lam, mu)  # (grid, K)
    f_num = lam_mu / (1.0 + lam_mu)
    f_den = 1.0 / (1.0 + lam_mu)
    penalty = np.log1p(lam_mu).sum(axis=1)
    df_rest = max(n - p - K, 0)
    rng = np.random.default_rng(seed)
    out = np.empty(nsim)
    chunk = max(1, min(nsim, 2_000_000 // max(K, gridlength)))
    for start in range(0, nsim, chunk):
        size = min(chunk, nsim - start)
        w_rest = rng.chisquare(df_rest, size) if df_rest > 0 else np.zeros(size)
        w = rng.chisquare(1.0, (size, K))
        N = w @ f_num.T
        D = w @ f_den.T + w_rest[:, None]
        lr = (n - p) * np.log1p(N / D) - penalty[None, :]
        # the first local maximum along the grid from λ = 0, as RLRsim's search stops at the first decrease
        falls = lr[:, 1:] < lr[:, :-1]
        stop = np.where(falls.any(axis=1), falls.argmax(axis=1), gridlength - 1)
        out[start : start + size] = np.maximum(lr[np.arange(size), stop], 0.0)
    return out
