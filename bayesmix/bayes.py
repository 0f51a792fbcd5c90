"""Posterior sampling of a fitted model's Bayesian twin, and the frequentist/Bayesian comparison table.

Two routes reach the same posterior (the model of :mod:`bayesmix.pymc_model`):

* the fast route (default, ``sampler="nutpie"``): nutpie's NUTS on a log density that
  bayesmix evaluates itself, with analytic gradients: in NumPy, or for the common collapsed
  models (terms of up to two coefficients; scalar-term binomial-logit and Poisson GLMMs) by
  :mod:`bayesmix.fastdens`'s numba kernels, compiled once per machine (disk cache).  For
  LMMs the random effects — and the fixed effects too when their priors are Normal, as
  by default — are integrated out analytically (a Cholesky per evaluation: dense up to 300
  random effects, beyond that :mod:`bayesmix.blockedlmm`'s blocked one) and drawn
  afterwards from their exact Gaussian conditional given each draw of (σ, SDs,
  correlations); integrating β removes the funnel between β and a group SD that few
  groups create (Dyestuff2 diverged without it).  GLMMs with one scalar term integrate
  by adaptive Gauss-Hermite quadrature; other GLMMs keep the non-centred ``u``.
  Tests check these densities against the PyMC model's ``logp``.
* the PyMC route: ``pymc.sample`` on ``result.pymc_model`` with PyMC's, nutpie's or
  numpyro's NUTS — taken for ``sampler="pymc"`` / ``"numpyro"``, and for nutpie when a
  prior or family is outside what the fast route evaluates.

Unconstrained coordinates of the fast route: β as is, ``log σ``, ``log sd`` and, per
correlation matrix, Stan's canonical-partial-correlation map (``tanh``) to its Cholesky
factor; the log-Jacobians are added, so the posterior is the one on the natural scale.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import scipy.linalg as la
import scipy.sparse as sp
from scipy.special import expit, gammaln, log_ndtr

from bayesmix.threads import blas_threads_for
from bayesmix.pymc_model import ModelPriors, TermInfo, filled_params, resolve_priors, term_infos

SAMPLERS = ("nutpie", "pymc", "numpyro", "blackjax")
# random effects up to which an LMM is sampled with them integrated out by a dense Cholesky; beyond, by
# bayesmix.blockedlmm's blocked one while its dense block stays small, else with the random effects kept
COLLAPSE_MAX_Q = 300
_H = 1e-20  # complex-step size: derivatives exact to rounding
_LOG_2PI = float(np.log(2.0 * np.pi))


class SamplingError(RuntimeError):
    """Sampling cannot start: a failed fit, a missing sampler, a model the sampler cannot take."""


# --- prior log densities (complex-step safe in x) ------------------------------------------------

def prior_logp(dist: str, params: dict, x):
    """Elementwise log density of a fast-route prior at x (real or complex with a tiny imaginary part)."""
    p = params
    if dist in ("Flat", "HalfFlat"):
        return 0.0 * x
    if dist == "Normal":
        z = (x - p["mu"]) / p["sigma"]
        return -0.5 * z * z - np.log(p["sigma"]) - 0.5 * _LOG_2PI
    if dist == "StudentT":
        nu, z = p["nu"], (x - p["mu"]) / p["sigma"]
        const = gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * np.log(nu * np.pi) - np.log(p["sigma"])
        return const - (nu + 1) / 2 * np.log1p(z * z / nu)
    if dist == "Cauchy":
        z = (x - p["alpha"]) / p["beta"]
        return -np.log(np.pi * p["beta"]) - np.log1p(z * z)
    if dist == "HalfNormal":
        z = x / p["sigma"]
        return 0.5 * np.log(2.0 / np.pi) - np.log(p["sigma"]) - 0.5 * z * z
    if dist == "HalfCauchy":
        z = x / p["beta"]
        return np.log(2.0 / (np.pi * p["beta"])) - np.log1p(z * z)
    if dist == "HalfStudentT":
        nu, z = p["nu"], x / p["sigma"]
        const = np.log(2.0) + gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * np.log(nu * np.pi) - np.log(p["sigma"])
        return const - (nu + 1) / 2 * np.log1p(z * z / nu)
    if dist == "Exponential":
        return np.log(p["lam"]) - p["lam"] * x
    if dist == "Gamma":
        a, b = p["alpha"], p["beta"]
        return a * np.log(b) - gammaln(a) + (a - 1) * np.log(x) - b * x
    if dist == "InverseGamma":
        a, b = p["alpha"], p["beta"]
        return a * np.log(b) - gammaln(a) - (a + 1) * np.log(x) - b / x
    if dist == "LogNormal":
        lx = np.log(x)
        return -lx - np.log(p["sigma"]) - 0.5 * _LOG_2PI - 0.5 * ((lx - p["mu"]) / p["sigma"]) ** 2
    raise ValueError(f"no fast log density for {dist}")


def lkj_normalizing_constant(eta: float, k: int) -> float:
    """PyMC's log normalizing constant of the LKJ density."""
    j = np.arange(1, k)
    return float((k - 1) * gammaln(eta + 0.5 * (k - 1)) - np.sum(0.5 * j * np.log(np.pi) + gammaln(eta + 0.5 * (k - 1 - j))))


def corr_cholesky(y, k: int):
    """Stan's map from k(k-1)/2 reals to a correlation Cholesky factor, and its log-Jacobian.

    Batched over leading axes; the log-Jacobian is with respect to L's strictly lower entries.
    """
    y = np.asarray(y)
    z = np.tanh(y)
    batch = y.shape[:-1]
    L = np.zeros(batch + (k, k), dtype=y.dtype)
    L[..., 0, 0] = 1.0
    logjac = np.sum(np.log1p(-z * z), axis=-1)
    pos = 0
    for i in range(1, k):
        ss = np.zeros(batch, dtype=y.dtype)
        for j in range(i):
            if j == 0:
                L[..., i, 0] = z[..., pos]
            else:
                logjac = logjac + 0.5 * np.log1p(-ss)
                L[..., i, j] = z[..., pos] * np.sqrt(1.0 - ss)
            ss = ss + L[..., i, j] ** 2
            pos += 1
        L[..., i, i] = np.sqrt(1.0 - ss)
    return L, logjac


def corr_cholesky_inverse(Lc: np.ndarray) -> np.ndarray:
    """The unconstrained values that :func:`corr_cholesky` maps to ``Lc``."""
    k = Lc.shape[0]
    out = []
    for i in range(1, k):
        ss = 0.0
        for j in range(i):
            denom = np.sqrt(max(1.0 - ss, 1e-300))
            out.append(np.arctanh(np.clip(Lc[i, j] / denom, -0.999999, 0.999999)))
            ss += Lc[i, j] ** 2
    return np.array(out)


# --- the variance parameters: unconstrained -> (σ, L per term), priors and Jacobians ------------

class VarianceBlock:
    """The variance parameters, unconstrained: ``log σ``, every term's ``log sd``, then the correlation reals."""

    def __init__(self, infos: list[TermInfo], priors: ModelPriors):
        self.infos = infos
        self.has_sigma = priors.sigma is not None
        scale_priors = ([priors.sigma] if self.has_sigma else []) + [p for i in infos for p in priors.sd[i.label]]
        self.scale_priors = _grouped(scale_priors)
        self.n_scales = len(scale_priors)
        self.etas = [filled_params(priors.corr[i.label])["eta"] if i.k > 1 else None for i in infos]
        self.lkj_const = [lkj_normalizing_constant(e, i.k) if i.k > 1 else 0.0 for e, i in zip(self.etas, infos)]
        self.exponents = [2.0 * e - 2.0 + i.k - np.arange(1, i.k + 1) if i.k > 1 else None for e, i in zip(self.etas, infos)]
        sd_start = np.cumsum([int(self.has_sigma)] + [i.k for i in infos])
        self.sd_slices = [slice(a, a + i.k) for a, i in zip(sd_start[:-1], infos)]
        corr_sizes = [i.k * (i.k - 1) // 2 for i in infos]
        corr_start = np.cumsum([self.n_scales] + corr_sizes)
        self.corr_slices = [slice(a, a + m) for a, m in zip(corr_start[:-1], corr_sizes)]
        self.size = int(corr_start[-1])

    def evaluate(self, v):
        """σ (or None), [L_t], log prior + log-Jacobian — batched over v's leading axes, complex-step safe."""
        log_scales = v[..., : self.n_scales]
        scales = np.exp(log_scales)
        lp = np.sum(log_scales, axis=-1)  # Jacobian of exp
        for dist, params, cols in self.scale_priors:
            lp = lp + np.sum(prior_logp(dist, params, scales[..., cols]), axis=-1)
        sigma = scales[..., 0] if self.has_sigma else None
        Ls = []
        for info, sd_sl, corr_sl, eta, const, exps in zip(self.infos, self.sd_slices, self.corr_slices, self.etas,
                                                           self.lkj_const, self.exponents):
            sd = scales[..., sd_sl]
            if info.k == 1:
                Ls.append(sd[..., :, None])
                continue
            if info.k == 2:  # closed form: L_c = [[1, 0], [z, √(1-z²)]]
                z = np.tanh(v[..., corr_sl.start])
                one_minus = 1.0 - z * z
                lp = lp + eta * np.log(one_minus) + const  # tanh Jacobian + LKJ density
                L = np.zeros(v.shape[:-1] + (2, 2), dtype=v.dtype)
                L[..., 0, 0] = sd[..., 0]
                L[..., 1, 0] = sd[..., 1] * z
                L[..., 1, 1] = sd[..., 1] * np.sqrt(one_minus)
                Ls.append(L)
                continue
            Lc, logjac = corr_cholesky(v[..., corr_sl], info.k)
            diag = np.diagonal(Lc, axis1=-2, axis2=-1)
            lp = lp + logjac + const + np.sum(exps * np.log(diag), axis=-1)
            Ls.append(sd[..., :, None] * Lc)
        return sigma, Ls, lp

    def with_derivatives(self, v: np.ndarray):
        """Values at v and their derivatives along each coordinate of v (complex step, one batched call)."""
        n = len(v)
        batch = v[None, :] + 1j * _H * np.eye(n)
        sigma, Ls, lp = self.evaluate(batch)
        values = (None if sigma is None else sigma[0].real, [L[0].real for L in Ls], lp[0].real)
        derivs = (None if sigma is None else sigma.imag / _H, [L.imag / _H for L in Ls], lp.imag / _H)
        return values, derivs

    def start(self, result) -> np.ndarray:
        """Unconstrained values at the frequentist estimates (SDs kept off zero)."""
        scales = [np.log(result.sigma)] if self.has_sigma else []
        corrs = []
        for sd, corr_chol in starting_factors(result):
            scales.extend(np.log(sd))
            if len(sd) > 1:
                corrs.extend(corr_cholesky_inverse(corr_chol))
        return np.array(scales + corrs, dtype=float)


def starting_factors(result) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per term, where samplers start: the SDs at the estimates kept off zero (at least a tenth of
    σ, or of 1 without a scale), and the Cholesky factor of the estimated correlation matrix shrunk
    off the boundary (|ρ| = 1 has no density)."""
    sd_floor = 0.1 * (result.sigma if result.has_scale else 1.0)
    out = []
    for cov in result.term_covariances():
        sd = np.maximum(np.sqrt(np.maximum(np.diag(cov), 0.0)), sd_floor)
        corr = 0.9 * cov / np.outer(sd, sd) + 0.1 * np.eye(len(sd))
        np.fill_diagonal(corr, 1.0)
        out.append((sd, np.linalg.cholesky(corr)))
    return out


def spherical_effects(result, Ls) -> list[np.ndarray]:
    """The fit's random effects b as spherical u = L⁻¹b per level, (levels, k) per term, for factors ``Ls``."""
    out, start = [], 0
    for term, L in zip(result.compiled.terms, Ls):
        b = result.b[start : start + term.q].reshape(term.nlevels, term.k)
        out.append(la.solve_triangular(L, b.T, lower=True).T)
        start += term.q
    return out


def _grouped(priors) -> list[tuple[str, dict, np.ndarray]]:
    """Per-column priors grouped by distribution: (dist, parameter arrays, columns)."""
    groups: dict[tuple, list[int]] = {}
    for j, prior in enumerate(priors):
        groups.setdefault((prior.dist, tuple(filled_params(prior))), []).append(j)
    out = []
    for (dist, names), cols in groups.items():
        params = {n: np.array([filled_params(priors[j])[n] for j in cols]) for n in names}
        out.append((dist, params, np.array(cols)))
    return out


class BetaPrior:
    """The fixed effects' prior: value and gradient (complex step, elementwise)."""

    def __init__(self, priors):
        self.groups = _grouped(priors)

    def __call__(self, beta: np.ndarray):
        z = beta + 1j * _H
        total = np.zeros(len(beta), dtype=complex)
        for dist, params, cols in self.groups:
            total[cols] = prior_logp(dist, params, z[cols])
        return float(np.sum(total.real)), total.imag / _H


# --- likelihoods with analytic gradients ---------------------------------------------------------

class _Blocks:
    """Where each term's random effects sit in u (level-major, k per level)."""

    def __init__(self, terms, leading: int = 0):
        """``leading`` > 0 puts a block of that many columns first, one "level" (the fixed effects)."""
        shapes = ([(1, leading)] if leading else []) + [(t.nlevels, t.k) for t in terms]
        self.index, start = [], 0
        for levels, k in shapes:
            self.index.append(start + np.arange(levels * k).reshape(levels, k))
            start += levels * k
        self.q = start
        self.slices = [slice(ix[0, 0], ix[-1, -1] + 1) for ix in self.index]

    def times_lambda(self, mat: np.ndarray, Ls) -> np.ndarray:
        """``mat @ Λ`` for a (m, q) matrix: each term's columns times its L, level by level."""
        out = np.empty_like(mat)
        for sl, ix, L in zip(self.slices, self.index, Ls):
            part = mat[:, sl].reshape(mat.shape[0], ix.shape[0], ix.shape[1])
            out[:, sl] = (part @ L).reshape(mat.shape[0], -1)
        return out

    def lambda_times(self, u: np.ndarray, Ls) -> np.ndarray:
        """``Λ u`` for a vector u."""
        out = np.empty_like(u)
        for sl, ix, L in zip(self.slices, self.index, Ls):
            out[sl] = (u[sl].reshape(ix.shape) @ L.T).ravel()
        return out


class CollapsedLmm:
    """log p(y | β, σ, L) of an LMM with the random effects integrated out, from sufficient statistics.

    With ``A = Λ'Z'WZΛ/σ² + I`` and ``c = Λ'Z'W(y - Xβ)/σ²`` the integral is Gaussian:
    ``log p = const - n log σ - ½ log|A| - ½ (‖y - Xβ‖²_W / σ² - c'A⁻¹c)``; the gradient is
    the expectation of the complete-data score over u | y (Fisher's identity).  A single
    term makes A block diagonal (one k x k block per level); otherwise it is dense.
    """

    def __init__(self, compiled, beta_prior: tuple[np.ndarray, np.ndarray] | None = None):
        """``beta_prior = (means, sds)`` of Normal priors integrates β out as well: it joins u as a
        leading block of "random effects" ``β = mean + sd·β̃``, ``β̃ ~ N(0, I)``, with its fixed factor."""
        c = compiled
        w = c.weights
        keep = w > 0
        self.n = int(keep.sum())
        self.const = -0.5 * self.n * _LOG_2PI + 0.5 * float(np.log(w[keep]).sum())
        y = c.y - c.offset
        Z = sp.hstack([t.z_matrix() for t in c.terms], format="csr")
        X = c.X
        self.beta_factor = None
        if beta_prior is not None:
            mean, sd = beta_prior
            y = y - X @ mean
            Z = sp.hstack([sp.csr_matrix(X), Z], format="csr")
            X = np.zeros((len(y), 0))
            self.beta_mean, self.beta_factor = np.asarray(mean, float), np.diag(np.asarray(sd, float))
        WZ = sp.diags(w) @ Z
        self.p_integrated = 0 if beta_prior is None else c.p
        self.blocks = _Blocks(c.terms, leading=self.p_integrated)
        self.q = self.blocks.q
        self.single = len(c.terms) == 1 and beta_prior is None
        self.ztx = np.asarray(WZ.T @ X)
        self.zty = np.asarray(WZ.T @ y).ravel()
        self.xtx = X.T @ (w[:, None] * X)
        self.xty = X.T @ (w * y)
        self.yty = float(y @ (w * y))
        ztz = (WZ.T @ Z).tocsr()
        if self.single:
            ix = self.blocks.index[0]
            self.ztz_blocks = np.asarray(ztz.todense())[ix[:, :, None], ix[:, None, :]]  # (levels, k, k)
        else:
            self.ztz = np.asarray(ztz.todense())
            self.eye = np.eye(self.q)

    def _rss(self, beta) -> float:
        return self.yty - 2.0 * beta @ self.xty + beta @ self.xtx @ beta

    def value_and_grad(self, beta, sigma, Ls):
        s2 = sigma * sigma
        s = self.zty - self.ztx @ beta
        parts = self._blocked(s, sigma, Ls[0]) if self.single else self._dense(s, sigma, Ls)
        half_logdet, c_u, b_mean, mb, trace_a_inv, expected, u_mean = parts
        rwr = self._rss(beta)
        value = self.const - self.n * np.log(sigma) - half_logdet - 0.5 * (rwr / s2 - c_u)
        d_beta = (self.xty - self.xtx @ beta - self.ztx.T @ b_mean) / s2
        resid2 = rwr - 2.0 * s @ b_mean + b_mean @ mb
        d_sigma = -self.n / sigma + (resid2 + s2 * (self.q - trace_a_inv)) / sigma**3
        d_Ls = [((s - mb)[ix].T @ u_mean[ix] - e) / s2 for ix, e in zip(self.blocks.index, expected)]
        return value, d_beta, d_sigma, d_Ls[1:] if self.beta_factor is not None else d_Ls

    def _blocked(self, s, sigma, L):
        s2 = sigma * sigma
        M = self.ztz_blocks
        ML = M @ L
        A = np.swapaxes(ML, 1, 2) @ L / s2 + np.eye(L.shape[0])  # L'M_l L/σ² + I per level
        C = np.linalg.cholesky(A)
        a_inv = np.linalg.inv(A)
        S = s.reshape(-1, L.shape[0])
        c = S @ L / s2
        u = np.einsum("lab,lb->la", a_inv, c)
        b = u @ L.T
        mb = np.einsum("lab,lb->la", M, b).ravel()
        half_logdet = np.log(np.diagonal(C, axis1=1, axis2=2)).sum()
        expected = np.einsum("lab,lbc->ac", ML, a_inv)
        return half_logdet, float(np.sum(c * u)), b.ravel(), mb, np.trace(a_inv, axis1=1, axis2=2).sum(), [expected], u.ravel()

    def _factors(self, Ls):
        return Ls if self.beta_factor is None else [self.beta_factor, *Ls]

    def _dense(self, s, sigma, Ls):
        s2 = sigma * sigma
        Ls = self._factors(Ls)
        ml = self.blocks.times_lambda(self.ztz, Ls)  # M Λ
        A = self.blocks.times_lambda(ml.T.copy(), Ls) / s2 + self.eye  # Λ'MΛ/σ² + I
        C = la.cholesky(0.5 * (A + A.T), lower=True, check_finite=False)
        c = self.blocks.times_lambda(s[None, :], Ls)[0] / s2  # Λ's/σ²
        u = la.cho_solve((C, True), c, check_finite=False)
        a_inv = la.cho_solve((C, True), self.eye, check_finite=False)
        b = self.blocks.lambda_times(u, Ls)
        expected = [np.einsum("laj,jlb->ab", ml[ix], a_inv[:, ix]) for ix in self.blocks.index]
        return np.log(np.diag(C)).sum(), float(c @ u), b, self.ztz @ b, np.trace(a_inv), expected, u

    def draw_u(self, beta, sigma, Ls, rng) -> np.ndarray:
        """u (preceded by β̃ when β is integrated) from its exact conditional N(A⁻¹c, A⁻¹) given (β, σ, L)."""
        s2 = sigma * sigma
        s = self.zty - self.ztx @ beta
        z = rng.standard_normal(self.q)
        if self.single:
            L = Ls[0]
            k = L.shape[0]
            A = np.swapaxes(self.ztz_blocks @ L, 1, 2) @ L / s2 + np.eye(k)
            C = np.linalg.cholesky(A)
            mean = np.linalg.solve(A, (s.reshape(-1, k) @ L / s2)[:, :, None])[:, :, 0]
            noise = np.linalg.solve(np.swapaxes(C, 1, 2), z.reshape(-1, k)[:, :, None])[:, :, 0]
            return (mean + noise).ravel()
        Ls = self._factors(Ls)
        A = self.blocks.times_lambda(self.blocks.times_lambda(self.ztz, Ls).T.copy(), Ls) / s2 + self.eye
        C = la.cholesky(0.5 * (A + A.T), lower=True, check_finite=False)
        c = self.blocks.times_lambda(s[None, :], Ls)[0] / s2
        mean = la.cho_solve((C, True), c, check_finite=False)
        return mean + la.solve_triangular(C, z, lower=True, trans="T", check_finite=False)


class FullModel:
    """log p(y | β, σ, L, u) + log N(u; 0, I) with the non-centred random effects kept."""

    def __init__(self, result):
        c = result.compiled
        keep = c.weights > 0
        self.keep = keep
        self.X = c.X[keep]
        self.offset = c.offset[keep]
        self.terms = c.terms
        self.columns = [t.columns[keep] for t in c.terms]
        self.codes = [t.factor.codes[keep] for t in c.terms]
        self.level_sum = [sp.csr_matrix((np.ones(keep.sum()), (codes, np.arange(keep.sum()))), shape=(t.nlevels, keep.sum()))
                          for t, codes in zip(c.terms, self.codes)]
        self.blocks = _Blocks(c.terms)
        self.q = self.blocks.q
        self.family, self.link = _family_link(result)
        y, w = c.y[keep], c.weights[keep]
        if self.family == "gaussian":
            self.y, self.w = y - self.offset, w
            self.const = -0.5 * len(y) * _LOG_2PI + 0.5 * float(np.log(w).sum())
            self.offset = np.zeros_like(self.offset)
        else:
            self.data, self.const = glm_data(self.family, y, w)
        self.u_const = -0.5 * self.q * _LOG_2PI

    def eta(self, beta, Ls, u):
        eta = self.offset + self.X @ beta
        for ix, L, cols, codes in zip(self.blocks.index, Ls, self.columns, self.codes):
            b = u[ix] @ L.T
            eta = eta + np.einsum("ij,ij->i", cols, b[codes])
        return eta

    def _obs(self, eta, sigma):
        """Σ log p(y_i | η_i) and its derivative in η (and in σ for gaussian)."""
        if self.family == "gaussian":
            e = self.y - eta
            we2 = float(np.sum(self.w * e * e))
            value = self.const - len(e) * np.log(sigma) - 0.5 * we2 / sigma**2
            return value, self.w * e / sigma**2, -len(e) / sigma + we2 / sigma**3
        logp, d1, _ = glm_terms(self.family, self.link, eta, self.data)
        return self.const + float(np.sum(logp)), d1, 0.0

    def value_and_grad(self, beta, sigma, Ls, u):
        value, g, d_sigma = self._obs(self.eta(beta, Ls, u), sigma)
        d_beta = self.X.T @ g
        d_u = -u.copy()
        d_Ls = []
        for ix, L, cols, summ in zip(self.blocks.index, Ls, self.columns, self.level_sum):
            H = summ @ (g[:, None] * cols)  # (levels, k): Σ_i g_i z_i per level
            d_u[ix] += H @ L
            d_Ls.append(H.T @ u[ix])
        return value + self.u_const - 0.5 * float(u @ u), d_beta, d_sigma, d_Ls, d_u


def glm_data(family: str, y, w) -> tuple[dict, float]:
    """The response as the log density needs it, and the log density's constant."""
    if family == "binomial":
        trials, successes = np.round(w), np.round(y * w)
        const = float(np.sum(gammaln(trials + 1) - gammaln(successes + 1) - gammaln(trials - successes + 1)))
        return {"n": trials, "k": successes}, const
    return {"y": y, "w": w}, -float(np.sum(w * gammaln(y + 1)))  # poisson


def glm_terms(family: str, link: str, eta, data: dict):
    """Per observation: log p(y | η) less constants, its derivative in η, and the Fisher information.

    ``eta`` may carry trailing axes (quadrature nodes); the data broadcast along them.
    """
    extra = (slice(None),) + (None,) * (np.ndim(eta) - 1)
    if family == "poisson":
        y, w = data["y"][extra], data["w"][extra]
        mu = np.exp(eta)
        return w * (y * eta - mu), w * (y - mu), w * mu
    n, k = data["n"][extra], data["k"][extra]
    if link == "logit":  # k log μ + (n - k) log(1 - μ) = k η - n log(1 + e^η)
        mu = expit(eta)
        return k * eta - n * np.logaddexp(0.0, eta), k - n * mu, n * mu * (1.0 - mu)
    if link == "probit":
        log_mu, log_1m = log_ndtr(eta), log_ndtr(-eta)
        log_phi = -0.5 * eta * eta - 0.5 * _LOG_2PI
        d1 = k * np.exp(log_phi - log_mu) - (n - k) * np.exp(log_phi - log_1m)
        return _xlogy(k, log_mu) + _xlogy(n - k, log_1m), d1, n * np.exp(2 * log_phi - log_mu - log_1m)
    e = np.exp(eta)  # cloglog
    log_1m = -e
    log_mu = np.log(-np.expm1(-e))
    d1 = k * e * np.exp(-e - log_mu) - (n - k) * e
    return _xlogy(k, log_mu) + _xlogy(n - k, log_1m), d1, n * e * e * np.exp(log_1m - log_mu)


class ScalarTermGlmm:
    """log p(y | β, sd) of a GLMM with one scalar random-effects term, the random effects integrated out.

    The likelihood factorizes over levels into one-dimensional integrals, each computed by
    adaptive Gauss-Hermite quadrature (lme4's nAGQ) with ``nodes`` nodes around the level's
    conditional mode, far below Monte Carlo error.  The gradient is the conditional
    expectation of the complete-data score under the same quadrature (Fisher's identity);
    NUTS needs only the log density to be exact, the gradient merely to be close.
    """

    def __init__(self, result, nodes: int = 15):
        c = result.compiled
        keep = c.weights > 0
        term = c.terms[0]
        self.family, self.link = _family_link(result)
        self.data, self.const = glm_data(self.family, c.y[keep], c.weights[keep])
        self.X, self.offset = c.X[keep], c.offset[keep]
        self.z = term.columns[keep, 0]
        self.codes = term.factor.codes[keep]
        self.nlevels = term.nlevels
        self.level_sum = sp.csr_matrix((np.ones(keep.sum()), (self.codes, np.arange(keep.sum()))),
                                       shape=(self.nlevels, keep.sum()))
        t, w = np.polynomial.hermite_e.hermegauss(nodes)
        self.t, self.log_w = t, np.log(w) + 0.5 * t * t - 0.5 * _LOG_2PI
        self.blocks = _Blocks(c.terms)
        self.q = self.nlevels
        self.b_hat = np.asarray(result.b, dtype=float)  # Newton starts from the fit's conditional modes

    def _mode(self, base, s):
        """Each level's conditional mode of u and the curvature there (Fisher scoring from the fit's modes)."""
        u = self.b_hat / s
        sz = s * self.z
        for _ in range(50):
            d1, info = self._score(base + sz * u[self.codes])
            grad = np.bincount(self.codes, d1 * sz, self.nlevels) - u
            curv = np.bincount(self.codes, info * sz * sz, self.nlevels) + 1.0
            step = grad / curv
            u += step
            if np.max(np.abs(step)) < 1e-9:  # the curvature 1e-9 from the mode serves the quadrature as well
                break
        return u, curv

    def _score(self, eta):
        if self.link == "logit":  # the common case, without the log density
            mu = expit(eta)
            return self.data["k"] - self.data["n"] * mu, self.data["n"] * mu * (1.0 - mu)
        _, d1, info = glm_terms(self.family, self.link, eta, self.data)
        return d1, info

    def _nodes(self, beta, s):
        base = self.offset + self.X @ beta
        mode, curv = self._mode(base, s)
        scale = 1.0 / np.sqrt(curv)
        u = mode[:, None] + scale[:, None] * self.t[None, :]  # (levels, nodes)
        eta = base[:, None] + (s * self.z)[:, None] * u[self.codes]
        logp, d1, _ = glm_terms(self.family, self.link, eta, self.data)
        log_f = self.level_sum @ logp - 0.5 * u * u + self.log_w[None, :]  # (levels, nodes)
        return u, scale, log_f, d1

    def value_and_grad(self, beta, sigma, Ls):
        s = Ls[0][0, 0]
        u, scale, log_f, d1 = self._nodes(beta, s)
        top = log_f.max(axis=1, keepdims=True)
        weights = np.exp(log_f - top)
        total = weights.sum(axis=1, keepdims=True)
        value = self.const + float(np.sum(np.log(scale) + top[:, 0] + np.log(total[:, 0])))
        post = (weights / total)[self.codes]  # (n, nodes): each observation's level's node weights
        expected_d1 = np.sum(post * d1, axis=1)
        d_beta = self.X.T @ expected_d1
        d_s = float(np.sum(self.z * np.sum(post * d1 * u[self.codes], axis=1)))
        return value, d_beta, 0.0, [np.array([[d_s]])]

    def draw_u(self, beta, sigma, Ls, rng) -> np.ndarray:
        return self.draw_u_batch(beta[None, :], None, [L[None] for L in Ls], rng)[0]

    def draw_u_batch(self, beta, sigma, Ls, rng, candidates: int = 4) -> np.ndarray:
        """u for a batch of draws from its exact conditional, by rejection sampling.

        The log conditional ``h(u) = Σ log p(y | η(u)) - u²/2`` has ``h'' ≤ -1`` (the
        likelihood is log-concave in η, η affine in u), so ``h(u) ≤ h(m) - (u - m)²/2`` at
        the mode m: N(m, 1) proposals accepted with probability ``exp(h(u) - h(m) + (u - m)²/2)``
        are exact draws.
        """
        s = Ls[0][:, 0, 0]
        base = self.offset + beta @ self.X.T  # (draws, n)
        sz = s[:, None] * self.z
        mode = np.stack([self.b_hat / si for si in s])
        for _ in range(50):
            d1, info = self._score(base + sz * mode[:, self.codes])
            step = ((self.level_sum @ (d1 * sz).T).T - mode) / ((self.level_sum @ (info * sz * sz).T).T + 1.0)
            mode += step
            if np.max(np.abs(step)) < 1e-12:
                break
        h_mode = self._log_conditional(base, sz, mode[:, :, None])[:, :, 0]
        out = np.empty_like(mode)
        pending = np.ones(mode.shape, dtype=bool)
        while pending.any():
            rows = np.flatnonzero(pending.any(axis=1))
            cand = mode[rows, :, None] + rng.standard_normal((len(rows), self.nlevels, candidates))
            log_accept = (self._log_conditional(base[rows], sz[rows], cand) - h_mode[rows, :, None]
                          + 0.5 * (cand - mode[rows, :, None]) ** 2)
            accepted = np.log(rng.uniform(size=cand.shape)) < log_accept
            first = np.argmax(accepted, axis=2)
            newly = pending[rows] & accepted.any(axis=2)
            chosen = np.take_along_axis(cand, first[:, :, None], axis=2)[:, :, 0]
            block = out[rows]
            block[newly] = chosen[newly]
            out[rows] = block
            pending[rows] &= ~newly
        return out

    def _log_conditional(self, base, sz, u):
        """h(u) per draw, level and candidate; u: (draws, levels, m)."""
        draws, _, m = u.shape
        eta = base[:, :, None] + sz[:, :, None] * u[:, self.codes, :]  # (draws, n, m)
        logp, _, _ = glm_terms(self.family, self.link, np.moveaxis(eta, 1, 0), self.data)  # (n, draws, m)
        sums = (self.level_sum @ logp.reshape(len(self.z), -1)).reshape(self.nlevels, draws, m)
        return np.moveaxis(sums, 0, 1) - 0.5 * u * u


def _xlogy(a, log_b):
    return np.where(a == 0, 0.0, a * log_b)


def _family_link(result) -> tuple[str, str]:
    if result.is_lmm:
        return "gaussian", "identity"
    return result.family.name, result.family.link.name


def fast_route_reason(result, priors: ModelPriors) -> str | None:
    """Why the fast route cannot take this model (None when it can)."""
    family, link = _family_link(result)
    if (family, link) not in {("gaussian", "identity"), ("binomial", "logit"), ("binomial", "probit"),
                              ("binomial", "cloglog"), ("poisson", "log")}:
        return f"the {family} family with the {link} link"
    if family == "binomial":
        w, y = result.compiled.weights, result.compiled.y
        if np.any(np.abs(w - np.round(w)) > 1e-7) or np.any(np.abs(y * w - np.round(y * w)) > 1e-7):
            return "non-integer binomial counts"
    if not priors.all_fast():
        return "a prior outside the fast route's distributions"
    return None


# --- the posterior on the unconstrained scale ---------------------------------------------------

class FastPosterior:
    """Log posterior density and gradient on the unconstrained vector ``[β, u (full model only), variance]``."""

    def __init__(self, result, priors: ModelPriors, collapsed: bool):
        self.result = result
        self.infos = term_infos(result)
        self.priors = priors
        self.p = result.compiled.p
        self.collapsed = collapsed
        self.integrate_beta = collapsed and result.is_lmm and all(b.dist == "Normal" for b in priors.beta)
        if not collapsed:
            self.lik = FullModel(result)
        elif result.is_lmm:
            normal = [filled_params(b) for b in priors.beta] if self.integrate_beta else None
            beta_prior = (np.array([b["mu"] for b in normal]), np.array([b["sigma"] for b in normal])) if normal else None
            self.lik = _collapsed_lmm(result.compiled, beta_prior)
        else:
            self.lik = ScalarTermGlmm(result)
        if self.integrate_beta:
            self.p = 0
        self.q = 0 if collapsed else self.lik.q
        self.variance = VarianceBlock(self.infos, priors)
        self.beta_prior = BetaPrior([] if self.integrate_beta else priors.beta)
        self.dim = self.p + self.q + self.variance.size
        self.evaluations = 0
        self.kernel = _compiled_kernel(self)

    def logp_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """The log density and gradient: the numba kernel where it covers the model, else NumPy."""
        if self.kernel is not None:
            return self.kernel(x)
        return self.numpy_logp_and_grad(x)

    def split(self, x):
        p, q = self.p, self.q
        return x[..., :p], x[..., p : p + q], x[..., p + q :]

    def numpy_logp_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        # nutpie calls from its own thread, where the caller's np.errstate does not reach
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._logp_and_grad(x)

    def _logp_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        self.evaluations += 1
        beta, u, v = self.split(x)
        (sigma, Ls, lp_v), (d_sigma_dv, d_L_dv, d_lp_dv) = self.variance.with_derivatives(v)
        lp_beta, d_lp_beta = self.beta_prior(beta)
        try:
            if self.collapsed:
                value, d_beta, d_sigma, d_Ls = self.lik.value_and_grad(beta, sigma, Ls)
                d_u = np.zeros(0)
            else:
                value, d_beta, d_sigma, d_Ls, d_u = self.lik.value_and_grad(beta, sigma, Ls, u)
        except np.linalg.LinAlgError:  # a numerically singular system: no density there
            return -np.inf, np.zeros_like(x)
        grad_v = d_lp_dv.copy()
        if sigma is not None:
            grad_v += d_sigma * d_sigma_dv
        for dL, dL_dv in zip(d_Ls, d_L_dv):
            grad_v += np.einsum("iab,ab->i", dL_dv, dL)
        total = value + lp_v + lp_beta
        grad = np.concatenate([d_beta + d_lp_beta, d_u, grad_v])
        if not np.isfinite(total) or not np.all(np.isfinite(grad)):
            return -np.inf, np.zeros_like(x)
        return float(total), grad

    def start(self) -> np.ndarray:
        r = self.result
        v0 = self.variance.start(r)
        if self.collapsed:
            return np.concatenate([r._beta[: self.p], v0])
        _, Ls, _ = self.variance.evaluate(v0)
        return np.concatenate([r._beta, *(u.ravel() for u in spherical_effects(r, Ls)), v0])

    def jitter_scale(self) -> np.ndarray:
        se = np.sqrt(np.diag(self.result._vcov))[: self.p]
        return np.concatenate([se, np.full(self.q, 0.3), np.full(self.variance.size, 0.3)])


# --- sampling -----------------------------------------------------------------------------------

def sample(result, draws: int = 1000, tune: int = 1000, chains: int = 4, random_seed=None, sampler: str = "nutpie",
           progressbar: bool = True, priors: dict | None = None, collapse: bool | None = None,
           target_accept: float = 0.9):
    """Draw from the posterior of ``result``'s Bayesian model; returns an ``xarray.DataTree`` (ArviZ data).

    ``target_accept`` (NUTS's step-size target) defaults to 0.9 rather than 0.8: with few
    groups (Penicillin's 6 samples) 0.8 left the odd divergence in 4000 draws.
    """
    if not 0.0 < target_accept < 1.0:
        raise ValueError(f"target_accept must lie in (0, 1), got {target_accept!r}")
    check_sampleable(result)
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(map(repr, SAMPLERS))}")
    for name, value in (("draws", draws), ("tune", tune), ("chains", chains)):
        if not isinstance(value, int | np.integer) or value < (0 if name == "tune" else 1):
            raise ValueError(f"{name} must be a {'non-negative' if name == 'tune' else 'positive'} integer, got {value!r}")
    spec = resolve_priors(result, priors)
    seed = int(np.random.SeedSequence(random_seed).generate_state(1)[0] >> 1) if not isinstance(random_seed, int | np.integer) else int(random_seed)
    reason = fast_route_reason(result, spec)
    if sampler == "nutpie" and reason is None:
        _require("nutpie", "sampler='nutpie'")
        can_collapse = collapsible(result)
        if collapse is None:
            collapse = can_collapse and (not result.is_lmm or _small(result.compiled) or _blocked(result.compiled))
        if collapse and not can_collapse:
            raise ValueError("collapse=True integrates the random effects out: analytically for LMMs, by "
                             "quadrature for GLMMs with a single scalar random-effects term; this model has neither")
        return _sample_fast(result, spec, draws, tune, chains, seed, progressbar, bool(collapse), target_accept)
    if collapse:
        raise ValueError(f"collapse=True is available with sampler='nutpie' and the fast route only"
                         f"{'' if reason is None else f' (this model has {reason})'}")
    return _sample_pymc(result, spec, draws, tune, chains, seed, sampler, progressbar, target_accept)


def _small(compiled) -> bool:
    return sum(t.q for t in compiled.terms) <= COLLAPSE_MAX_Q


def _blocked(compiled) -> bool:
    from bayesmix import blockedlmm

    return blockedlmm.applicable(compiled)


def _collapsed_lmm(compiled, beta_prior):
    """The dense collapsed density for a few hundred random effects, the blocked one beyond."""
    if _small(compiled) or not _blocked(compiled):
        return CollapsedLmm(compiled, beta_prior)
    from bayesmix.blockedlmm import BlockedCollapsedLmm

    return BlockedCollapsedLmm(compiled, beta_prior)


def collapsible(result) -> bool:
    """LMMs, and GLMMs with one scalar random-effects term, can be sampled with the random effects integrated out."""
    terms = result.compiled.terms
    return result.is_lmm or (len(terms) == 1 and terms[0].k == 1)


def check_sampleable(result) -> None:
    from bayesmix.results import MixedModelResult

    if not isinstance(result, MixedModelResult):
        raise TypeError(f"sample() needs a fitted lmer/glmer result, got {type(result).__name__}")
    if not result.converged or not np.all(np.isfinite(result._beta)) or not np.all(np.isfinite(result._theta)):
        raise SamplingError("this model failed to fit (the optimizer did not converge), so its estimates cannot "
                            "start the sampler or be compared with the posterior; refit it first (rescale "
                            "covariates, simplify the random effects) and sample the converged fit")


def _require(module: str, what: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise SamplingError(f"{what} needs the {module} package: pip install {module}"
                            + ("" if module == "nutpie" else " (or use sampler='nutpie' or 'pymc')"))


def _compiled_kernel(post: FastPosterior):
    """bayesmix.fastdens's compiled density for ``post`` (None where it does not cover the model).

    numba comes with PyMC (pytensor depends on it); should it fail to import, NumPy serves.
    """
    try:
        from bayesmix import fastdens
    except ImportError:
        return None
    return fastdens.compile_posterior(post)


def _sample_fast(result, spec, draws, tune, chains, seed, progressbar, collapsed, target_accept):
    import nutpie
    from nutpie.compiled_pyfunc import from_pyfunc

    post = FastPosterior(result, spec, collapsed)
    start, scale = post.start(), post.jitter_scale()

    def make_logp():
        return post.logp_and_grad

    def make_expand(seed1, seed2, chain):
        return lambda x: {"x": np.array(x, dtype=float)}

    def initial_point(chain_seed):
        rng = np.random.default_rng(chain_seed)
        return start + scale * rng.uniform(-1.0, 1.0, size=len(start))

    model = from_pyfunc(post.dim, make_logp, make_expand, [np.dtype("float64")], [(post.dim,)], ["x"],
                        make_initial_point_fn=initial_point)
    t0 = time.perf_counter()
    # one BLAS thread: the matrices are small, and multithreaded OpenBLAS spins on them (100x slower)
    with blas_threads_for(0), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        trace = nutpie.sample(model, draws=draws, tune=tune, chains=chains, seed=seed, progress_bar=progressbar,
                              save_warmup=False, cores=_parallel_chains(post, chains), target_accept=target_accept)
        x = np.asarray(trace.posterior["x"].values)
        posterior = _fast_posterior_dataset(result, post, x, np.random.default_rng(seed))
    elapsed = time.perf_counter() - t0
    density = f"nutpie NUTS on bayesmix's {'numba-compiled' if post.kernel is not None else 'NumPy'} log density"
    if not collapsed:
        route = f"{density} (non-centred random effects)"
    elif result.is_lmm:
        what = "random and fixed effects" if post.integrate_beta else "random effects"
        how = " (a blocked Cholesky, as the ML engine's)" if getattr(post.lik, "blocked", False) else ""
        route = (f"{density}, {what} integrated out analytically{how}, then drawn from their exact Gaussian "
                 "conditional")
    else:
        route = (f"{density}, random effects integrated out by 15-node adaptive Gauss-Hermite quadrature, then "
                 "drawn exactly from their conditional (rejection sampling)")
    stats = trace.sample_stats.to_dataset() if hasattr(trace.sample_stats, "to_dataset") else trace.sample_stats
    return _datatree(result, spec, posterior, stats, route, elapsed, sampler="nutpie")


def _parallel_chains(post: FastPosterior, chains: int) -> int:
    """How many chains nutpie runs at once.

    nutpie calls the log density through Python, so chains in parallel threads fight over the GIL:
    with the numba kernels and the NumPy densities one at a time measured faster.  The blocked
    collapsed density spends its time in LAPACK and nogil kernels, which run beside each other
    (InstEval: 1.8x faster with two).
    """
    import os

    return min(chains, os.cpu_count() or 1) if getattr(post.lik, "blocked", False) else 1


def _fast_posterior_dataset(result, post: FastPosterior, x: np.ndarray, rng):
    import xarray as xr

    chains, draws, _ = x.shape
    flat = x.reshape(chains * draws, -1)
    beta, u, v = post.split(flat)
    sigma, Ls, _ = post.variance.evaluate(v)
    if post.collapsed:
        if hasattr(post.lik, "draw_u_batch"):
            chunks = [slice(i, i + 100) for i in range(0, len(beta), 100)]
            u = np.concatenate([post.lik.draw_u_batch(beta[c], None, [L[c] for L in Ls], rng) for c in chunks])
        else:
            if post.kernel is not None and post.kernel.draws_u:
                u = post.kernel.draw_u_batch(beta, sigma, Ls, rng)
            else:
                sigmas = sigma if sigma is not None else [None] * len(beta)
                u = np.stack([post.lik.draw_u(b, s, [L[i] for L in Ls], rng)
                              for i, (b, s) in enumerate(zip(beta, sigmas))])
            if post.integrate_beta:  # the draws of β̃ lead those of u
                p = post.lik.p_integrated
                beta = post.lik.beta_mean + u[:, :p] * np.diag(post.lik.beta_factor)
                u = u[:, p:]
    values = {"beta": beta}
    if sigma is not None:
        values["sigma"] = sigma
    for info, L, ix in zip(post.infos, Ls, _Blocks(result.compiled.terms).index):
        values.update(_term_draws(info, L, u[:, ix]))
    values["theta"] = _theta_draws(post.infos, Ls, sigma)
    shape = (chains, draws)
    data = {name: (("chain", "draw", *_dims(name, post.infos)), arr.reshape(shape + arr.shape[1:]))
            for name, arr in values.items()}
    from bayesmix.pymc_model import model_coords

    coords = {"chain": np.arange(chains), "draw": np.arange(draws), **model_coords(result)}
    used = {d for dims, _ in data.values() for d in dims}
    return xr.Dataset(data, coords={k: v for k, v in coords.items() if k in used})


def _term_draws(info: TermInfo, L: np.ndarray, u: np.ndarray) -> dict:
    """SDs, correlations and b = L u for one term, per draw (L: (draws, k, k), u: (draws, levels, k))."""
    out = {f"sd_{info.label}": np.sqrt(np.sum(L**2, axis=-1))}
    if info.k > 1:
        cov = L @ np.swapaxes(L, -1, -2)
        sd = out[f"sd_{info.label}"]
        rows, cols = np.triu_indices(info.k, 1)
        out[f"corr_{info.label}"] = cov[:, rows, cols] / (sd[:, rows] * sd[:, cols])
    out[f"b_{info.label}"] = np.einsum("dlk,djk->dlj", u, L)
    return out


def _theta_draws(infos, Ls, sigma) -> np.ndarray:
    parts = []
    for info, L in zip(infos, Ls):
        T = L / sigma[:, None, None] if sigma is not None else L
        cols, rows = np.triu_indices(info.k)
        parts.append(T[:, rows, cols])
    return np.concatenate(parts, axis=1)


def _dims(name: str, infos) -> tuple[str, ...]:
    if name == "beta":
        return ("fixef",)
    if name == "theta":
        return ("theta_name",)
    if name == "sigma":
        return ()
    for info in infos:
        if name == f"sd_{info.label}":
            return (info.coef_dim,)
        if name == f"corr_{info.label}":
            return (info.pair_dim,)
        if name == f"b_{info.label}":
            return (info.group, info.coef_dim)
    raise KeyError(name)


def posterior_var_names(result) -> list[str]:
    names = ["beta"] + (["sigma"] if result.has_scale else [])
    for info in term_infos(result):
        names.append(f"sd_{info.label}")
        if info.k > 1:
            names.append(f"corr_{info.label}")
        names.append(f"b_{info.label}")
    return names + ["theta"]


def _sample_pymc(result, spec, draws, tune, chains, seed, sampler, progressbar, target_accept):
    import pymc as pm

    from bayesmix.pymc_model import build_pymc_model

    if sampler != "pymc":
        _require(sampler, f"sampler={sampler!r}")
    model = build_pymc_model(result, spec)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*BLAS.*")
        trace = pm.sample(draws=draws, tune=tune, chains=chains, random_seed=seed, progressbar=progressbar,
                          nuts_sampler=sampler, model=model, var_names=posterior_var_names(result),
                          compute_convergence_checks=False, target_accept=target_accept,
                          initvals=_pymc_initvals(result, model))
    elapsed = time.perf_counter() - t0
    posterior = trace["posterior"].to_dataset()
    stats = trace["sample_stats"].to_dataset()
    route = f"{sampler} NUTS on the PyMC model (result.pymc_model)"
    return _datatree(result, spec, posterior, stats, route, elapsed, sampler=sampler)


def _pymc_initvals(result, model) -> dict:
    """The fit's estimates (SDs kept off zero) as the PyMC route's start, as the fast route starts.

    PyMC's own start, the priors' centres, can lie far out under near-flat priors (β = 0 for
    Dyestuff's yields of ~1500): numpyro's chains then did not all arrive within 200 tuning steps.
    """
    r = result
    free = {rv.name for rv in model.free_RVs}
    values = {}

    def put(name, vector, labels):
        if name in free:
            values[name] = np.asarray(vector, dtype=float)
        else:  # one RV per element (priors of different kinds)
            values.update({f"{name}[{label}]": float(x) for x, label in zip(vector, labels)})

    put("beta", r._beta, r.compiled.fixef_names)
    if "sigma" in free:
        values["sigma"] = float(r.sigma)
    factors = starting_factors(r)
    spherical = spherical_effects(r, [sd[:, None] * corr_chol for sd, corr_chol in factors])
    for info, (sd, _), u in zip(term_infos(r), factors, spherical):
        put(f"sd_{info.label}", sd, info.columns)
        values[f"u_{info.label}"] = u
    return values


def _datatree(result, spec: ModelPriors, posterior, stats, route, elapsed, sampler):
    import xarray as xr

    keep = [n for n in posterior_var_names(result) if n in posterior]
    posterior = posterior[keep]
    posterior.attrs.update({
        "priors": spec.to_json(result),
        "user_priors": str(spec.user),
        "sampler": sampler,
        "route": route,
        "sampling_time": float(elapsed),
        "formula": result.formula_display,
        "family": result.family_name,
        "link": result.link_name,
        "parametrization": "b = L u, u ~ N(0, I), L = diag(sd) chol(corr); theta = L / sigma (lme4's Λθ blocks)",
        "inference_library": "bayesmix",
    })
    observed = xr.Dataset({"y": (("obs",), result.compiled.y)}, coords={"obs": np.arange(result.nobs)})
    return xr.DataTree.from_dict({"posterior": posterior, "sample_stats": stats, "observed_data": observed})


# --- frequentist and Bayesian side by side ------------------------------------------------------

def compare(result, posterior, ci_prob: float = 0.94, wald_level: float = 0.95) -> pd.DataFrame:
    """Per parameter: the ML/REML (or Laplace) estimate, its SE and Wald interval (fixed effects),
    the posterior mean, SD, HDI, R-hat and bulk ESS."""
    import arviz_stats as azs
    from scipy.stats import norm

    names = [n for n in posterior_var_names(result) if not n.startswith(("b_", "theta"))]
    missing = [n for n in names if n not in posterior["posterior"]]
    if missing:
        raise ValueError(f"the posterior has no {', '.join(missing)}: was it sampled from this model?")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        summ = azs.summary(posterior, var_names=names, ci_prob=ci_prob, ci_kind="hdi", round_to="none")
    pct = f"{100 * ci_prob:g}"
    lo, hi = [c for c in summ.columns if c.startswith("hdi")][:2]
    freq = frequentist_table(result)
    z = norm.ppf(0.5 + wald_level / 2)
    table = pd.DataFrame({
        "kind": freq["kind"],
        "estimate": freq["estimate"],
        "se": freq["se"],
        f"wald_{100 * (1 - wald_level) / 2:g}%": freq["estimate"] - z * freq["se"],
        f"wald_{100 * (1 + wald_level) / 2:g}%": freq["estimate"] + z * freq["se"],
        "mean": summ["mean"].reindex(freq.index),
        "sd": summ["sd"].reindex(freq.index),
        f"hdi{pct}_lower": summ[lo].reindex(freq.index),
        f"hdi{pct}_upper": summ[hi].reindex(freq.index),
        "r_hat": summ["r_hat"].reindex(freq.index),
        "ess_bulk": summ["ess_bulk"].reindex(freq.index),
    }, index=freq.index)
    table.index.name = "parameter"
    table.attrs["estimate"] = result.method
    table.attrs["priors"] = posterior["posterior"].attrs.get("priors", "")
    return table


def frequentist_table(result) -> pd.DataFrame:
    """The fit's estimates under the posterior's parameter names (SEs for fixed effects only)."""
    rows = [(f"beta[{n}]", "fixed", e, s) for n, e, s in zip(result.compiled.fixef_names, result._beta, result.se)]
    for info, cov in zip(term_infos(result), result.term_covariances()):
        sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
        rows += [(f"sd_{info.label}[{c}]", "sd", s, np.nan) for c, s in zip(info.columns, sd)]
        for pair, (i, j) in zip(info.pairs, zip(*np.triu_indices(info.k, 1))):
            corr = cov[i, j] / (sd[i] * sd[j]) if sd[i] > 0 and sd[j] > 0 else np.nan
            rows.append((f"corr_{info.label}[{pair}]", "corr", corr, np.nan))
    if result.has_scale:
        rows.append(("sigma", "sigma", result.sigma, np.nan))
    frame = pd.DataFrame(rows, columns=["parameter", "kind", "estimate", "se"]).set_index("parameter")
    return frame
