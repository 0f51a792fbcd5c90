"""Log densities of the Bayesian model on the unconstrained scale, in NumPy: priors, correlation
factors, the collapsed LMM (β and b integrated out) and the quadrature-collapsed scalar-term GLMM.

These are the reference implementations; :mod:`bayesmix.bayes.fastdens` compiles the common
ones with numba, and tests check both against the PyMC model's ``logp``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp
from scipy.special import gammaln

from bayesmix.bayes.pymc_model import (
    ModelPriors,
    TermInfo,
    filled_params,
)

# random effects up to which an LMM is sampled with them integrated out by a dense Cholesky; beyond, by
# bayesmix.bayes.blockedlmm's blocked one while its dense block stays small, else with the random effects kept
COLLAPSE_MAX_Q = 300
_H = 1e-20  # complex-step size: derivatives exact to rounding
_LOG_2PI = float(np.log(2.0 * np.pi))


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


def dense_gram(cross) -> np.ndarray:
    """``[Z X y]'W[Z X y]`` as one dense matrix, from the engine's blocks (``engine.lmm.CrossProducts``)."""
    a11, a_x1 = cross.a11, cross.a_x1
    q1 = a11.shape[0] * a11.shape[1]
    q2 = cross.a_rr.shape[0]
    m = a_x1.shape[0]
    out = np.zeros((q1 + q2 + m, q1 + q2 + m))
    out[:q1, :q1] = la.block_diag(*a11) if len(a11) else np.zeros((0, 0))
    r1 = cross.a_r1.toarray() if hasattr(cross.a_r1, "toarray") else np.asarray(cross.a_r1)
    xz = np.hstack([a_x1.reshape(m, q1), cross.a_xr])
    out[q1:q1 + q2, :q1], out[q1:q1 + q2, q1:q1 + q2] = r1, cross.a_rr
    out[:q1, q1:q1 + q2] = r1.T
    out[q1 + q2:, :q1 + q2], out[:q1 + q2, q1 + q2:] = xz, xz.T
    out[q1 + q2:, q1 + q2:] = cross.a_xx
    return out


class CollapsedLmm:
    """log p(y | β, σ, L) of an LMM with the random effects integrated out, from sufficient statistics.

    With ``A = Λ'Z'WZΛ/σ² + I`` and ``c = Λ'Z'W(y - Xβ)/σ²`` the integral is Gaussian:
    ``log p = const - n log σ - ½ log|A| - ½ (‖y - Xβ‖²_W / σ² - c'A⁻¹c)``; the gradient is
    the expectation of the complete-data score over u | y (Fisher's identity).  A single
    term makes A block diagonal (one k x k block per level); otherwise it is dense.
    """

    def __init__(self, compiled, beta_prior: tuple[np.ndarray, np.ndarray] | None = None, cross=None):
        """``beta_prior = (means, sds)`` of Normal priors integrates β out as well: it joins u as a
        leading block of "random effects" ``β = mean + sd·β̃``, ``β̃ ~ N(0, I)``, with its fixed factor.
        ``cross``: the fit's ``engine.lmm.CrossProducts`` of ``[Z X y - offset]``, used instead of the
        rows (a fit whose rows stay on a Dask cluster): every statistic here is one of their blocks."""
        if cross is not None:
            self._from_cross(compiled, beta_prior, cross)
            return
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

    def _from_cross(self, c, beta_prior, cross) -> None:
        """The statistics of ``__init__`` from the dense Gram matrix of ``[Z X y]`` (weighted)."""
        self.n = int(cross.n)
        self.const = -0.5 * self.n * _LOG_2PI + 0.5 * float(cross.sum_log_weights)
        gram, q, p = dense_gram(cross), sum(t.q for t in c.terms), c.p
        z, x, y = slice(0, q), slice(q, q + p), q + p
        self.beta_factor = None
        if beta_prior is None:
            ztz, self.ztx, self.zty = gram[z, z], gram[z, x], gram[z, y]
            self.xtx, self.xty, self.yty = gram[x, x], gram[x, y], float(gram[y, y])
        else:  # as __init__: y - X·mean, and X joins Z in front
            mean, sd = (np.asarray(a, float) for a in beta_prior)
            order = np.r_[q:q + p, 0:q]
            ztz = gram[np.ix_(order, order)]
            self.zty = gram[order, y] - gram[np.ix_(order, range(q, q + p))] @ mean
            self.yty = float(gram[y, y] - 2.0 * mean @ gram[x, y] + mean @ gram[x, x] @ mean)
            self.ztx, self.xtx, self.xty = np.zeros((q + p, 0)), np.zeros((0, 0)), np.zeros(0)
            self.beta_mean, self.beta_factor = mean, np.diag(sd)
        self.p_integrated = 0 if beta_prior is None else p
        self.blocks = _Blocks(c.terms, leading=self.p_integrated)
        self.q = self.blocks.q
        self.single = len(c.terms) == 1 and beta_prior is None
        if self.single:
            ix = self.blocks.index[0]
            self.ztz_blocks = ztz[ix[:, :, None], ix[:, None, :]]
        else:
            self.ztz = np.ascontiguousarray(ztz)
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
        self.family = result.response_family
        self.normal = self.family.fast_route() == "normal"
        y, w = c.y[keep], c.weights[keep]
        if self.normal:
            self.y, self.w = y - self.offset, w
            self.const = -0.5 * len(y) * _LOG_2PI + 0.5 * float(np.log(w).sum())
            self.offset = np.zeros_like(self.offset)
        else:
            self._response = (y, w)
            self.data, self.const = self.family.glm_data(y, w)
        self.u_const = -0.5 * self.q * _LOG_2PI

    def set_family(self, family) -> None:
        """Evaluate with ``family`` from now on: the same family at another draw of its parameters (θ)."""
        self.family = family
        self.data, self.const = family.glm_data(*self._response)

    def parameter_grad(self, beta, Ls, u) -> dict[str, float]:
        """d log p(y | ...) / d each of the family's sampled parameters."""
        scores = self.family.glm_parameter_scores(self.eta(beta, Ls, u), self.data)
        return {name: float(np.sum(score)) for name, score in scores.items()}

    def eta(self, beta, Ls, u):
        eta = self.offset + self.X @ beta
        for ix, L, cols, codes in zip(self.blocks.index, Ls, self.columns, self.codes):
            b = u[ix] @ L.T
            eta = eta + np.einsum("ij,ij->i", cols, b[codes])
        return eta

    def _obs(self, eta, sigma):
        """Σ log p(y_i | η_i) and its derivative in η (and in σ for gaussian)."""
        if self.normal:
            e = self.y - eta
            we2 = float(np.sum(self.w * e * e))
            value = self.const - len(e) * np.log(sigma) - 0.5 * we2 / sigma**2
            return value, self.w * e / sigma**2, -len(e) / sigma + we2 / sigma**3
        logp, d1, _ = self.family.glm_terms(eta, self.data)
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
        self.family = result.family
        self.data, self.const = self.family.glm_data(c.y[keep], c.weights[keep])
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
        return self.family.glm_score(eta, self.data)

    def _nodes(self, beta, s):
        base = self.offset + self.X @ beta
        mode, curv = self._mode(base, s)
        scale = 1.0 / np.sqrt(curv)
        u = mode[:, None] + scale[:, None] * self.t[None, :]  # (levels, nodes)
        eta = base[:, None] + (s * self.z)[:, None] * u[self.codes]
        logp, d1, _ = self.family.glm_terms(eta, self.data)
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
            # the family's terms take observations first: (n, draws)
            d1, info = (a.T for a in self._score((base + sz * mode[:, self.codes]).T))
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
        logp, _, _ = self.family.glm_terms(np.moveaxis(eta, 1, 0), self.data)  # (n, draws, m)
        sums = (self.level_sum @ logp.reshape(len(self.z), -1)).reshape(self.nlevels, draws, m)
        return np.moveaxis(sums, 0, 1) - 0.5 * u * u
