"""Numba-compiled log posterior and gradient (and u draws) of the fast route's common collapsed models.

The kernels (entry points ``lmm_posterior``, which also draws u, and ``glmm_posterior``) are cached
on disk (``cache=True``); numba's cache directory is ``NUMBA_CACHE_DIR`` when set, else this
package's ``__pycache__``, else the user's cache directory (``~/.cache/numba``) when the installed
package cannot be written to.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bayesmix.bayes import kernel_layout

# the family codes (bayesmix.engine.families' Family.kernel_code) the GLMM kernel switches on: binomial-logit,
# else Poisson-log
from bayesmix.engine.families import KERNEL_BINOMIAL_LOGIT as _BINOMIAL_LOGIT

# Prior kinds the kernel evaluates (their constants come from bayes.prior_logp, so only the x-dependent part is here).
_FLAT, _NORMAL, _STUDENT, _EXPONENTIAL, _GAMMA, _INVGAMMA, _LOGNORMAL = range(7)
MAX_Q = 300  # the kernel's plain loops measured faster than the NumPy route (LAPACK) up to q = 302; beyond, untried
# cached on disk: compiled once per machine; numpy's error model gives inf/nan (then -inf density), not exceptions,
# at the extreme points NUTS visits while tuning; nogil, so that nutpie runs chains in parallel threads.
# Compile time is the first sample()'s cost, so the kernels are plain loops over C-ordered float64/int64 arrays
# (one signature each): numba's array expressions, `@` and slice assignment each compile a generic
# implementation first (an array slice assignment alone took 2-4 s), and the loops are no slower at these sizes.
_jit = njit(cache=True, error_model="numpy", nogil=True)
_inline = njit(cache=True, error_model="numpy", nogil=True, inline="always")


# --- small loops in place of NumPy expressions (see above) ----------------------------------------

@_jit
def _dot(a, b):
    total = 0.0
    for i in range(a.shape[0]):
        total += a[i] * b[i]
    return total


@_jit
def _matvec(A, x):
    """A @ x."""
    out = np.zeros(A.shape[0])
    for i in range(A.shape[0]):
        acc = 0.0
        for j in range(A.shape[1]):
            acc += A[i, j] * x[j]
        out[i] = acc
    return out


@_jit
def _tmatvec(A, x):
    """A.T @ x."""
    out = np.zeros(A.shape[1])
    for i in range(A.shape[0]):
        for j in range(A.shape[1]):
            out[j] += A[i, j] * x[i]
    return out


@_jit
def _all_finite(total, grad):
    if not np.isfinite(total):
        return False
    for j in range(grad.shape[0]):
        if not np.isfinite(grad[j]):
            return False
    return True


# --- pieces shared by both likelihoods -----------------------------------------------------------

@_jit
def _prior_part(code, par, x):
    """The x-dependent part of a prior's log density and its derivative in x."""
    if code == _NORMAL:
        z = (x - par[0]) / par[1]
        return -0.5 * z * z, -z / par[1]
    if code == _STUDENT:
        nu = par[2]
        z = (x - par[0]) / par[1]
        r = 1.0 + z * z / nu
        return -0.5 * (nu + 1.0) * np.log1p(z * z / nu), -(nu + 1.0) * z / (par[1] * nu * r)
    if code == _EXPONENTIAL:
        return -par[0] * x, -par[0]
    if code == _GAMMA:
        return (par[0] - 1.0) * np.log(x) - par[1] * x, (par[0] - 1.0) / x - par[1]
    if code == _INVGAMMA:
        return -(par[0] + 1.0) * np.log(x) - par[1] / x, -(par[0] + 1.0) / x + par[1] / (x * x)
    if code == _LOGNORMAL:
        lx = np.log(x)
        z = (lx - par[0]) / par[1]
        return -lx - 0.5 * z * z, (-1.0 - z / par[1]) / x
    return 0.0, 0.0


@_jit
def _priors(values, codes, pars, consts, grad):
    """Σ prior log densities at ``values``; their derivatives go into ``grad`` (same length)."""
    total = 0.0
    for j in range(values.shape[0]):
        f, df = _prior_part(codes[j], pars[j], values[j])
        total += f + consts[j]
        grad[j] = df
    return total


@_inline
def _variance(v, n_scales, has_sigma, codes, pars, consts, term_k, term_eta, term_const, sd_start, corr_start, L, grad):
    """σ, the terms' factors (into L, (terms, 2, 2)) and log prior + log-Jacobian; their derivatives in v into grad.

    Terms have k ≤ 2: L = sd (k = 1) or [[sd₀, 0], [sd₁ z, sd₁ √(1 - z²)]] with z = tanh(y) (k = 2).
    """
    scales = np.empty(n_scales)
    for j in range(n_scales):
        scales[j] = np.exp(v[j])
    dprior = np.empty(n_scales)
    lp = _priors(scales, codes, pars, consts, dprior)
    for j in range(n_scales):
        lp += v[j]  # Jacobian of exp
        grad[j] = dprior[j] * scales[j] + 1.0
    sigma = scales[0] if has_sigma else 1.0
    for t in range(term_k.shape[0]):
        a = sd_start[t]
        L[t, 0, 0] = scales[a]
        if term_k[t] == 2:
            z = np.tanh(v[corr_start[t]])
            one_minus = 1.0 - z * z
            lp += term_eta[t] * np.log(one_minus) + term_const[t]  # tanh Jacobian + LKJ density
            grad[corr_start[t]] = -2.0 * term_eta[t] * z
            L[t, 1, 0] = scales[a + 1] * z
            L[t, 1, 1] = scales[a + 1] * np.sqrt(one_minus)
    return sigma, lp


@_jit
def _chain_factor(v, term_k, sd_start, corr_start, L, dL, grad):
    """Adds ∂/∂v of the terms' factors, given ∂logp/∂L per term (dL[t, :2, :2] for term t), into grad."""
    for t in range(term_k.shape[0]):
        a = sd_start[t]
        grad[a] += dL[t, 0, 0] * L[t, 0, 0]
        if term_k[t] == 2:
            y = corr_start[t]
            z = np.tanh(v[y])
            root = np.sqrt(1.0 - z * z)
            sd1 = np.exp(v[a + 1])
            grad[a + 1] += (dL[t, 1, 0] * z + dL[t, 1, 1] * root) * sd1
            grad[y] += (dL[t, 1, 0] * sd1 - dL[t, 1, 1] * sd1 * z / root) * (1.0 - z * z)


@_jit
def _cholesky(A, first, pat):
    """Lower Cholesky factor in place (A's lower triangle, zero outside the envelope); False when A is not
    numerically positive definite.

    ``first[i]``: the first structurally non-zero column of row i (the envelope, which the factor keeps);
    ``pat``'s second list holds, per column j, the rows i > j whose envelope reaches j.  With the fixed
    effects' block last an LMM's A is an arrow, and its factor costs O(q) instead of O(q³).  The upper
    triangle is neither read nor written.
    """
    ptr, idx = pat
    q = A.shape[0]
    for j in range(q):
        d = A[j, j]
        for m in range(first[j], j):
            d -= A[j, m] * A[j, m]
        if not d > 0.0:
            return False
        d = np.sqrt(d)
        A[j, j] = d
        for t in range(ptr[1, j], ptr[1, j + 1]):
            i = idx[t]
            s = A[i, j]
            for m in range(max(first[i], first[j]), j):
                s -= A[i, m] * A[j, m]
            A[i, j] = s / d
    return True


@_jit
def _back_substitute(C, y, pat):
    """y <- C'⁻¹ y in place for the lower factor C, over its envelope's column lists."""
    ptr, idx = pat
    for i in range(C.shape[0] - 1, -1, -1):
        s = y[i]
        for t in range(ptr[1, i], ptr[1, i + 1]):
            m = idx[t]
            s -= C[m, i] * y[m]
        y[i] = s / C[i, i]


@_jit
def _cho_solve(C, b, first, pat):
    q = C.shape[0]
    y = b.copy()
    for i in range(q):
        s = y[i]
        for m in range(first[i], i):
            s -= C[i, m] * y[m]
        y[i] = s / C[i, i]
    _back_substitute(C, y, pat)
    return y


@_jit
def _cho_inverse(C, first, pat):
    """A⁻¹ on A's pattern (the entries the gradient reads; zero elsewhere) from A's lower Cholesky factor.

    W = C⁻¹ (lower) is formed over its structural non-zeros (``pat``'s third list: per column j, the rows
    i >= j where W[i, j] can be non-zero), then A⁻¹ = W'W at the pattern's entries (its first list).
    """
    ptr, idx = pat
    q = C.shape[0]
    Wt = np.zeros((q, q))  # W transposed, so that the inner loops run along rows
    for j in range(q):
        start, end = ptr[2, j], ptr[2, j + 1]  # idx[start] is j itself
        Wt[j, j] = 1.0 / C[j, j]
        for t in range(start + 1, end):
            i = idx[t]
            s = 0.0
            for u in range(start, t):
                m = idx[u]
                if m >= first[i]:
                    s -= C[i, m] * Wt[j, m]
            Wt[j, i] = s / C[i, i]
    out = np.zeros((q, q))
    for i in range(q):
        for t in range(ptr[0, i], ptr[0, i + 1]):
            j = idx[t]
            if j > i:
                break
            s = 0.0
            for u in range(ptr[2, i], ptr[2, i + 1]):  # W[r, i] != 0 only there (r >= i >= j)
                r = idx[u]
                s += Wt[i, r] * Wt[j, r]
            out[i, j] = s
            out[j, i] = s
    return out


# --- collapsed LMM ------------------------------------------------------------------------------

@_jit
def _system(beta, sigma, BL, blk_k, cols, pat, ztz, zty, ztx):
    """s = Z'W(y - Xβ), Λ'M (MΛ transposed), A = Λ'MΛ/σ² + I (lower triangle) and c = Λ's/σ².

    Only the entries of ``pat``'s first list (per row, the columns of the levels it touches, ascending)
    are computed: elsewhere M, MΛ and A are zero.
    """
    col_blk, col_first, col_pos = cols
    ptr, idx = pat
    q = zty.shape[0]
    s2 = sigma * sigma
    s = zty.copy()
    if beta.shape[0] > 0:
        xb = _matvec(ztx, beta)
        for i in range(q):
            s[i] -= xb[i]
    MLt = np.zeros((q, q))  # Λ'M by rows (M is symmetric): MLt[j, r] = (MΛ)[r, j]
    for j in range(q):
        b, f, c = col_blk[j], col_first[j], col_pos[j]
        for a in range(c, blk_k[b]):
            w = BL[b, a, c]
            if w != 0.0:
                for t in range(ptr[0, j], ptr[0, j + 1]):  # row f + a of M: the level of j's pattern
                    r = idx[t]
                    MLt[j, r] += ztz[f + a, r] * w
    A = np.zeros((q, q))
    cvec = np.empty(q)
    for i in range(q):
        b, f, c = col_blk[i], col_first[i], col_pos[i]
        acc_c = 0.0
        for a in range(c, blk_k[b]):
            acc_c += BL[b, a, c] * s[f + a]
        cvec[i] = acc_c / s2
        for t in range(ptr[0, i], ptr[0, i + 1]):
            j = idx[t]
            if j > i:
                break
            acc = 0.0
            for a in range(c, blk_k[b]):
                acc += BL[b, a, c] * MLt[j, f + a]
            A[i, j] = acc / s2
        A[i, i] += 1.0
    return s, MLt, A, cvec


@_inline
def _collapsed_lmm(beta, sigma, BL, cols, blk_k, first, pat, ztz, zty, ztx, xtx, xty, yty, n, const, dL):
    """CollapsedLmm.value_and_grad with Λ block diagonal (block b: nlev levels of BL[b]'s k x k factor).

    Returns ok (False for a numerically singular A), value, ∂/∂β, ∂/∂σ; ∂/∂L per block goes into dL.
    """
    q = zty.shape[0]
    p = beta.shape[0]
    s2 = sigma * sigma
    col_blk, col_first, col_pos = cols
    ptr, idx = pat
    s, MLt, A, cvec = _system(beta, sigma, BL, blk_k, cols, pat, ztz, zty, ztx)
    if not _cholesky(A, first, pat):
        return False, 0.0, np.zeros(p), 0.0
    half_logdet = 0.0
    for i in range(q):
        half_logdet += np.log(A[i, i])
    u = _cho_solve(A, cvec, first, pat)
    c_u = _dot(cvec, u)
    bvec = np.zeros(q)
    for i in range(q):
        b, f, c = col_blk[i], col_first[i], col_pos[i]
        for a in range(c + 1):
            bvec[i] += BL[b, c, a] * u[f + a]
    mb = np.zeros(q)  # M b, over M's pattern
    for i in range(q):
        for t in range(ptr[0, i], ptr[0, i + 1]):
            mb[i] += ztz[i, idx[t]] * bvec[idx[t]]
    a_inv = _cho_inverse(A, first, pat)
    trace = 0.0
    for i in range(q):
        trace += a_inv[i, i]
    # ∂/∂L_b[a, c] = (Σ_levels (s - mb)[f+a] u[f+c] - Σ_levels (MΛ A⁻¹)[f+a, f+c]) / σ²
    dL[:] = 0.0
    for i in range(q):
        b, f, a = col_blk[i], col_first[i], col_pos[i]
        for c in range(blk_k[b]):
            jc = f + c
            e = 0.0
            for t in range(ptr[0, i], ptr[0, i + 1]):  # (MΛ)[i, m] is zero off row i's pattern
                m = idx[t]
                e += MLt[m, i] * a_inv[jc, m]  # A⁻¹ is symmetric
            dL[b, a, c] += ((s[i] - mb[i]) * u[jc] - e) / s2
    rwr = yty
    if p > 0:
        rwr += _dot(beta, _matvec(xtx, beta)) - 2.0 * _dot(beta, xty)
    value = const - n * np.log(sigma) - half_logdet - 0.5 * (rwr / s2 - c_u)
    d_beta = np.zeros(p)
    if p > 0:
        xb, zb = _matvec(xtx, beta), _tmatvec(ztx, bvec)
        for j in range(p):
            d_beta[j] = (xty[j] - xb[j] - zb[j]) / s2
    resid2 = rwr - 2.0 * _dot(s, bvec) + _dot(bvec, mb)
    d_sigma = -n / sigma + (resid2 + s2 * (q - trace)) / (sigma * s2)
    return True, value, d_beta, d_sigma


@_jit
def _block_factors(L, beta_factor):
    """Each block's factor: the terms' L, then the integrated β's fixed factor (if any)."""
    nt = L.shape[0]
    pb = beta_factor.shape[0]
    kmax = max(2, pb)
    BL = np.zeros((nt + (1 if pb > 0 else 0), kmax, kmax))
    for t in range(nt):
        for a in range(2):
            for b in range(2):
                BL[t, a, b] = L[t, a, b]
    for a in range(pb):
        for b in range(pb):
            BL[nt, a, b] = beta_factor[a, b]
    return BL


@_inline
def _draw_u(beta, sigma, L, beta_factor, cols, blk_k, first, pat, ztz, zty, ztx, z, out):
    """One draw of u (kernel order) from its exact conditional N(A⁻¹c, A⁻¹) into out: the mean plus C'⁻¹z (A = CC')."""
    q = z.shape[0]
    BL = _block_factors(L, beta_factor)
    _, _, A, cvec = _system(beta, sigma, BL, blk_k, cols, pat, ztz, zty, ztx)
    if not _cholesky(A, first, pat):
        for i in range(q):
            out[i] = np.nan
        return
    mean = _cho_solve(A, cvec, first, pat)
    y = z.copy()
    _back_substitute(A, y, pat)
    for i in range(q):
        out[i] = mean[i] + y[i]


@_jit
def lmm_posterior(x, p, n_scales, codes, pars, consts, term_k, term_eta, term_const, sd_start, corr_start,
                  beta_codes, beta_pars, beta_consts, beta_factor, ztz, zty, ztx, xtx, xty, yty, n, const,
                  col_blk, col_first, col_pos, blk_k, first, pat_ptr, pat_idx, draw_sigma, draw_L, z, out):
    """FastPosterior.logp_and_grad of a collapsed LMM whose terms have k ≤ 2 (β in x when p > 0, else integrated).

    With z non-empty, instead one draw of u given β = x[:p], σ = draw_sigma and the terms' factors draw_L into
    out (returned with 0.0): the draws share this one compiled function (a second entry point, compiled
    separately, re-optimizes everything it calls once more: about 1 s of the first sample()).
    """
    dim = x.shape[0]
    grad = np.zeros(dim)
    beta = x[:p].copy()
    if z.shape[0] > 0:
        _draw_u(beta, draw_sigma, draw_L, beta_factor, (col_blk, col_first, col_pos), blk_k, first,
                (pat_ptr, pat_idx), ztz, zty, ztx, z, out)
        return 0.0, out
    v = x[p:]
    nt = term_k.shape[0]
    L = np.zeros((nt, 2, 2))
    gv = np.zeros(v.shape[0])
    sigma, lp_v = _variance(v, n_scales, True, codes, pars, consts, term_k, term_eta, term_const, sd_start,
                            corr_start, L, gv)
    BL = _block_factors(L, beta_factor)
    dBL = np.zeros(BL.shape)
    ok, value, d_beta, d_sigma = _collapsed_lmm(beta, sigma, BL, (col_blk, col_first, col_pos), blk_k, first,
                                                (pat_ptr, pat_idx), ztz, zty, ztx, xtx, xty, yty, n, const, dBL)
    if not ok:
        return -np.inf, grad
    gv[0] += d_sigma * sigma
    _chain_factor(v, term_k, sd_start, corr_start, L, dBL, gv)  # reads dBL's first nt blocks only
    total = value + lp_v
    if p > 0:
        dprior = np.empty(p)
        total += _priors(beta, beta_codes, beta_pars, beta_consts, dprior)
        for j in range(p):
            grad[j] = d_beta[j] + dprior[j]
    for j in range(gv.shape[0]):
        grad[p + j] = gv[j]
    if not _all_finite(total, grad):
        return -np.inf, np.zeros(dim)
    return total, grad


# --- scalar-term GLMM by adaptive Gauss-Hermite quadrature --------------------------------------

@_jit
def _obs(kernel, eta, ni, ki):
    """log p(y | η) less constants, its derivative and the Fisher information, one observation."""
    if kernel == _BINOMIAL_LOGIT:
        e = np.exp(-abs(eta))  # one exponential serves μ, 1 - μ and log(1 + e^η), without overflow
        mu, one_minus = (1.0 / (1.0 + e), e / (1.0 + e)) if eta >= 0 else (e / (1.0 + e), 1.0 / (1.0 + e))
        return ki * eta - ni * (max(eta, 0.0) + np.log1p(e)), ki - ni * mu, ni * mu * one_minus
    mu = np.exp(eta)  # poisson, log link: ni the weight, ki the response
    return ni * (ki * eta - mu), ni * (ki - mu), ni * mu


@_jit
def _score(kernel, eta, ni, ki):
    """_obs's derivative and Fisher information only (the mode search needs no log density)."""
    if kernel == _BINOMIAL_LOGIT:
        e = np.exp(-abs(eta))
        mu, one_minus = (1.0 / (1.0 + e), e / (1.0 + e)) if eta >= 0 else (e / (1.0 + e), 1.0 / (1.0 + e))
        return ki - ni * mu, ni * mu * one_minus
    mu = np.exp(eta)
    return ni * (ki - mu), ni * mu


@_jit
def glmm_posterior(x, p, codes, pars, consts, beta_codes, beta_pars, beta_consts, kernel, X, offset, z, codes_obs,
                   nlevels, data_n, data_k, t, log_w, b_hat, const):
    """FastPosterior.logp_and_grad of a GLMM with one scalar term, u integrated by adaptive quadrature."""
    dim = x.shape[0]
    beta = x[:p].copy()
    grad = np.zeros(dim)
    log_sd = x[p]
    sd = np.exp(log_sd)
    dsd_prior = np.empty(1)
    sd_value = np.empty(1)
    sd_value[0] = sd
    lp = _priors(sd_value, codes, pars, consts, dsd_prior) + log_sd
    nobs = X.shape[0]
    base = _matvec(X, beta)
    sz = np.empty(nobs)
    for i in range(nobs):
        base[i] += offset[i]
        sz[i] = sd * z[i]
    # each level's conditional mode and curvature (Fisher scoring from the fit's modes), as ScalarTermGlmm._mode
    u = np.empty(nlevels)
    for lvl in range(nlevels):
        u[lvl] = b_hat[lvl] / sd
    curv = np.ones(nlevels)
    gsum = np.empty(nlevels)
    for _ in range(50):
        gsum[:] = 0.0
        curv[:] = 0.0
        for i in range(nobs):
            d1, info = _score(kernel, base[i] + sz[i] * u[codes_obs[i]], data_n[i], data_k[i])
            gsum[codes_obs[i]] += d1 * sz[i]
            curv[codes_obs[i]] += info * sz[i] * sz[i]
        biggest = 0.0
        for lvl in range(nlevels):
            curv[lvl] += 1.0
            step = (gsum[lvl] - u[lvl]) / curv[lvl]
            u[lvl] += step
            biggest = max(biggest, abs(step))
        if biggest < 1e-9:
            break
    nodes = t.shape[0]
    scale = np.empty(nlevels)
    for lvl in range(nlevels):
        scale[lvl] = 1.0 / np.sqrt(curv[lvl])
    unode = np.empty((nlevels, nodes))
    log_f = np.empty((nlevels, nodes))
    for lvl in range(nlevels):
        for m in range(nodes):
            unode[lvl, m] = u[lvl] + scale[lvl] * t[m]
            log_f[lvl, m] = -0.5 * unode[lvl, m] ** 2 + log_w[m]
    d1s = np.empty((nobs, nodes))
    for i in range(nobs):
        lvl = codes_obs[i]
        for m in range(nodes):
            logp, d1, _ = _obs(kernel, base[i] + sz[i] * unode[lvl, m], data_n[i], data_k[i])
            log_f[lvl, m] += logp
            d1s[i, m] = d1
    value = const
    post = np.empty((nlevels, nodes))
    for lvl in range(nlevels):
        top = log_f[lvl, 0]
        for m in range(1, nodes):
            top = max(top, log_f[lvl, m])
        total = 0.0
        for m in range(nodes):
            post[lvl, m] = np.exp(log_f[lvl, m] - top)
            total += post[lvl, m]
        for m in range(nodes):
            post[lvl, m] /= total
        value += np.log(scale[lvl]) + top + np.log(total)
    d_s = 0.0
    for i in range(nobs):
        lvl = codes_obs[i]
        e1 = 0.0
        e1u = 0.0
        for m in range(nodes):
            e1 += post[lvl, m] * d1s[i, m]
            e1u += post[lvl, m] * d1s[i, m] * unode[lvl, m]
        for j in range(p):
            grad[j] += X[i, j] * e1
        d_s += z[i] * e1u
    dprior = np.empty(p)
    total_lp = value + lp + _priors(beta, beta_codes, beta_pars, beta_consts, dprior)
    for j in range(p):
        grad[j] += dprior[j]
    grad[p] = d_s * sd + dsd_prior[0] * sd + 1.0
    if not _all_finite(total_lp, grad):
        return -np.inf, np.zeros(dim)
    return total_lp, grad


# --- from a FastPosterior to a compiled callable ------------------------------------------------

_KINDS = {"Flat": (_FLAT, ()), "HalfFlat": (_FLAT, ()), "Normal": (_NORMAL, ("mu", "sigma")),
          "HalfNormal": (_NORMAL, (None, "sigma")), "StudentT": (_STUDENT, ("mu", "sigma", "nu")),
          "HalfStudentT": (_STUDENT, (None, "sigma", "nu")), "Cauchy": (_STUDENT, ("alpha", "beta", 1.0)),
          "HalfCauchy": (_STUDENT, (None, "beta", 1.0)), "Exponential": (_EXPONENTIAL, ("lam",)),
          "Gamma": (_GAMMA, ("alpha", "beta")), "InverseGamma": (_INVGAMMA, ("alpha", "beta")),
          "LogNormal": (_LOGNORMAL, ("mu", "sigma"))}


def _prior_arrays(priors):
    """Kind codes, parameters (m, 3) and constants (the rest of bayes.prior_logp) of a list of priors."""
    from bayesmix.bayes.densities import prior_logp
    from bayesmix.bayes.pymc_model import filled_params

    codes = np.zeros(len(priors), dtype=np.int64)
    pars = np.zeros((len(priors), 3))
    consts = np.zeros(len(priors))
    for j, prior in enumerate(priors):
        code, names = _KINDS[prior.dist]
        params = filled_params(prior)
        codes[j] = code
        pars[j] = [0.0, 1.0, 1.0]
        for slot, name in enumerate(names):
            pars[j, slot] = 0.0 if name is None else name if isinstance(name, float) else float(params[name])
        at_one = float(np.asarray(prior_logp(prior.dist, {k: np.float64(v) for k, v in params.items()}, 1.0)))
        consts[j] = at_one - _prior_part.py_func(code, pars[j], 1.0)[0]  # in Python: no compile for one call
    return codes, pars, consts


def supported(post) -> bool:
    """Whether ``post`` (a FastPosterior) is one of the models the kernels evaluate."""
    from bayesmix.bayes.densities import CollapsedLmm, ScalarTermGlmm

    if not post.collapsed or any(info.k > 2 for info in post.infos):
        return False
    if any(prior.dist not in _KINDS for prior in _all_priors(post)):
        return False
    if isinstance(post.lik, CollapsedLmm):
        return post.lik.q <= MAX_Q
    return isinstance(post.lik, ScalarTermGlmm) and post.lik.family.kernel_code is not None


def _all_priors(post):
    spec = post.priors
    scales = ([spec.sigma] if post.variance.has_sigma else []) + [p for i in post.infos for p in spec.sd[i.label]]
    return scales + ([] if post.integrate_beta else list(spec.beta))


def compile_posterior(post):
    """A callable x -> (log posterior, gradient) equal to ``post``'s NumPy one, or None where unsupported."""
    if not supported(post):
        return None
    spec, var = post.priors, post.variance
    scale_priors = ([spec.sigma] if var.has_sigma else []) + [p for i in post.infos for p in spec.sd[i.label]]
    priors = (*_prior_arrays(scale_priors), *_prior_arrays([] if post.integrate_beta else list(spec.beta)))
    if post.result.is_lmm:
        return _lmm_posterior(post, priors)
    return _glmm_posterior(post, priors)


def _lmm_posterior(post, priors):
    lik, var = post.lik, post.variance
    codes, pars, consts, bcodes, bpars, bconsts = priors
    term_k = np.array([i.k for i in post.infos], dtype=np.int64)
    term_eta = np.array([e if e is not None else 0.0 for e in var.etas], dtype=float)
    term_const = np.array(var.lkj_const, dtype=float)
    sd_start = np.array([s.start for s in var.sd_slices], dtype=np.int64)
    corr_start = np.array([s.start for s in var.corr_slices], dtype=np.int64)
    index = list(lik.blocks.index)
    if lik.beta_factor is not None:  # β's block (CollapsedLmm's first) goes last: A becomes an arrow
        index = index[1:] + index[:1]
    order = np.concatenate([ix.ravel() for ix in index])
    blk_start = np.cumsum([0] + [ix.size for ix in index])[:-1].astype(np.int64)
    blk_nlev = np.array([ix.shape[0] for ix in index], dtype=np.int64)
    blk_k = np.array([ix.shape[1] for ix in index], dtype=np.int64)
    factor = np.zeros((0, 0)) if lik.beta_factor is None else np.ascontiguousarray(lik.beta_factor, dtype=float)
    ztz = lik.ztz if not lik.single else kernel_layout.dense_ztz(lik)
    ztz = np.ascontiguousarray(ztz[np.ix_(order, order)], dtype=float)
    system = (factor, ztz, np.ascontiguousarray(lik.zty[order], dtype=float),
              np.ascontiguousarray(lik.ztx[order], dtype=float))
    layout = (*kernel_layout.columns(blk_nlev, blk_k), blk_k,
              *kernel_layout.envelope(ztz, blk_start, blk_nlev, blk_k))
    args = (np.int64(post.p), np.int64(var.n_scales), codes, pars, consts, term_k, term_eta, term_const,
            sd_start, corr_start, bcodes, bpars, bconsts, *system,
            np.ascontiguousarray(lik.xtx, dtype=float), np.ascontiguousarray(lik.xty, dtype=float),
            float(lik.yty), float(lik.n), float(lik.const), *layout)
    return CompiledPosterior(lmm_posterior, args, order, len(post.infos))


def _glmm_posterior(post, priors):
    lik = post.lik
    codes, pars, consts, bcodes, bpars, bconsts = priors
    kernel = lik.family.kernel_code
    data_n, data_k = lik.family.kernel_arrays(lik.data)
    arrays = [np.ascontiguousarray(a, dtype=float) for a in (lik.X, lik.offset, lik.z)]
    data = [np.ascontiguousarray(a, dtype=float) for a in (data_n, data_k, lik.t, lik.log_w, lik.b_hat)]
    args = (np.int64(post.p), codes, pars, consts, bcodes, bpars, bconsts, np.int64(kernel), *arrays,
            np.ascontiguousarray(lik.codes, dtype=np.int64), np.int64(lik.nlevels), *data, float(lik.const))
    return CompiledPosterior(glmm_posterior, args)


class CompiledPosterior:
    """A kernel with its model's arrays: called on x gives (log posterior, gradient); LMMs also draw u."""

    def __init__(self, kernel, args, order=None, n_terms=0):
        self.kernel, self.args, self.order = kernel, args, order
        # the LMM kernel's draw arguments, empty: evaluate the density
        self.no_draw = (0.0, np.zeros((n_terms, 2, 2)), np.zeros(0), np.zeros(0)) if order is not None else ()

    def __call__(self, x):
        return self.kernel(np.ascontiguousarray(x, dtype=np.float64), *self.args, *self.no_draw)

    def as_function(self):
        """``self(x)`` as one closure over the argument tuple: nutpie calls it ~45,000 times per
        sample(), where each Python frame and tuple splice saved is ~3% of a 30 µs call."""
        kernel, args, contiguous = self.kernel, (*self.args, *self.no_draw), np.ascontiguousarray
        return lambda x: kernel(contiguous(x, dtype=np.float64), *args)

    @property
    def draws_u(self) -> bool:
        return self.order is not None

    def draw_u_batch(self, beta, sigma, Ls, rng) -> np.ndarray:
        """u per draw (β̃ first when β is integrated, as CollapsedLmm.draw_u); beta (D, p), sigma (D,), Ls [(D, k, k)]."""
        draws = len(sigma)
        L = np.zeros((draws, len(Ls), 2, 2))
        for t, Lt in enumerate(Ls):
            L[:, t, : Lt.shape[1], : Lt.shape[2]] = Lt
        z = rng.standard_normal((draws, len(self.order)))
        beta = np.ascontiguousarray(beta, dtype=np.float64)
        sigma = np.ascontiguousarray(sigma, dtype=np.float64)
        u = np.empty_like(z)
        for d in range(draws):
            self.kernel(beta[d], *self.args, sigma[d], L[d], z[d], u[d])
        out = np.empty_like(u)
        out[:, self.order] = u
        return out
