"""The exact gradient of the profiled (RE)ML deviance in θ, from the blocked Cholesky factor.

Every term of the profiled criterion is a log determinant of a leading block of
``M = D'AD + diag(I_q, 0)`` (A = [Z X y]'W[Z X y], D = blockdiag(Λ(θ), I)), and
``∂ log|M_j| = tr(M_j⁻¹ ∂M)``.  With ``M = LL'`` the padded ``M_j⁻¹`` is ``L⁻ᵀ P_j L⁻¹``,
so the criterion's derivative is ``tr(W ∂M)`` with ``W = L⁻ᵀ diag(w) L⁻¹``: w is 1 on
the u rows, 1 (REML) or 0 (ML) on the β rows, and n − p (REML) or n (ML) on the y row.
Since ``∂M/∂θ_i = E_i'AD + (AD)'E_i`` for the 0/1 pattern E_i of θ_i in D,

    ∂criterion/∂θ_i = 2 Σ_{(r,c) ∈ E_i} (W D'A)[c, r].

Only a few blocks of W are needed: the first term's level blocks (A's first-term block is
block diagonal), its rows against the rest, and the rest against itself.  With
``L = [[L1, 0], [L21, Ls]]`` and ``G = Ls⁻¹ L21 L1⁻¹`` they are

    W11_ℓℓ = L1ℓ⁻ᵀ L1ℓ⁻¹ + G_ℓ' diag(w2) G_ℓ,   W12 = −G' diag(w2) Ls⁻¹,   W22 = Ls⁻ᵀ diag(w2) Ls⁻¹,

which cost O(q1 m2²) for m2 = rows of the Schur block: a few evaluations' worth where the
Schur block is small next to the first term (maximal models such as kb07's), more where it
is not (the caller decides; see ``ProfiledDeviance.gradient_is_cheap``).  MixedModels.jl
derives the same gradient (its ``gradient!`` of the objective) from the blocked factor.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.linalg.lapack import dtrtri


def theta_pattern(terms, offset: int = 0, theta_offset: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, θ index) of every entry of ``blockdiag(Λ)`` over ``terms`` that is a θ."""
    rows, cols, index = [], [], []
    for term in terms:
        level = offset + np.arange(term.nlevels) * term.k
        for j, (r, c) in enumerate(zip(*term.theta_rows_cols)):
            rows.append(level + r)
            cols.append(level + c)
            index.append(np.full(term.nlevels, theta_offset + j))
        offset += term.q
        theta_offset += term.ntheta
    if not rows:
        empty = np.zeros(0, dtype=int)
        return empty, empty, empty
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(index)


def blocked_gradient(deviance, f, theta: np.ndarray) -> np.ndarray:
    """∂criterion/∂θ at the factorization ``f`` of ``deviance`` (a ProfiledDeviance) at θ."""
    cp = deviance.cross
    first = deviance.terms[0]
    k, levels, q1 = first.k, first.nlevels, first.q
    q2, p = deviance.q2, deviance.p
    m2 = f.l_s.shape[0]
    w2 = _schur_weights(m2, q2, p, deviance.n, deviance.reml)
    ls_inv, info = dtrtri(f.l_s, lower=1)
    if info != 0:
        return np.full(len(theta), np.nan)
    ls_inv = np.tril(ls_inv)
    l1_inv = np.linalg.inv(f.l1)
    # G = Ls⁻¹ L21 L1⁻¹, with L21 L1⁻¹ level by level (batched k x k products)
    l21 = _dense_l21(f, q1).reshape(m2, levels, k).transpose(1, 0, 2)
    G3 = np.matmul(ls_inv, (l21 @ l1_inv).transpose(1, 0, 2).reshape(m2, q1)).reshape(m2, levels, k)
    G_levels = G3.transpose(1, 0, 2)  # (levels, m2, k)
    w11 = l1_inv.transpose(0, 2, 1) @ l1_inv + (G_levels.transpose(0, 2, 1) * w2) @ G_levels
    # W12 D_rest' = -G' (diag(w2) Ls⁻¹ D_rest'): the small factor first
    v = _times_rest_d_transpose(ls_inv * w2[:, None], f.lambda_rest, q2)
    x = -(G3.reshape(m2, q1).T @ v)  # (q1, m2)
    T1 = first.factor_matrix(theta[: first.ntheta])

    grad = np.zeros(len(theta))
    # the first term: Σ_ℓ (W D'A)_ℓℓ = Σ_ℓ W11_ℓℓ T1' A11_ℓ + Σ_ℓ (W12 D_rest')_ℓ A_rest,ℓ
    s = ((w11 @ T1.T) @ cp.a11).sum(axis=0)
    s += _sum_level_products(x.reshape(levels, k, m2), cp, q2, k)
    r1, c1 = first.theta_rows_cols
    grad[: first.ntheta] = 2.0 * s[c1, r1]
    if q2:
        # the other terms: (W D'A) on the u2 rows and columns = (W21 Λ1') A_1,u2 + (W22 D_rest') A_rest,u2,
        # with W21 Λ1' = -Ls⁻ᵀ diag(w2) (G Λ1') and W22 D_rest' = Ls⁻ᵀ v
        g_l1 = (G3 @ T1.T).reshape(m2, q1)
        y = -(ls_inv[:, :q2].T * w2) @ _times_a_r1_transpose(cp.a_r1, g_l1)
        w22_d = ls_inv[:, :q2].T @ v
        y += w22_d[:, :q2] @ cp.a_rr + w22_d[:, q2:] @ cp.a_xr
        rows, cols, index = deviance.rest_theta_pattern
        grad += 2.0 * np.bincount(index, y[cols, rows], minlength=len(theta))
    return grad


def _times_rest_d_transpose(x: np.ndarray, lam, q2: int) -> np.ndarray:
    """``x @ blockdiag(Λ_rest, I)'`` without forming it: Λ_rest's diagonal or its per-term k x k blocks."""
    out = x.copy()
    if not q2:
        return out
    if isinstance(lam, np.ndarray):
        out[:, :q2] *= lam
        return out
    start = 0
    for nlevels, T in lam.blocks:
        end = start + nlevels * T.shape[0]
        out[:, start:end] = (x[:, start:end].reshape(len(x), nlevels, -1) @ T.T).reshape(len(x), -1)
        start = end
    return out


def _schur_weights(m2: int, q2: int, p: int, n: int, reml: bool) -> np.ndarray:
    """w on the Schur block's rows [u2, β, y] (see the module docstring)."""
    w = np.zeros(m2)
    w[:q2] = 1.0
    if reml:
        w[q2 : q2 + p] = 1.0
        w[-1] = n - p
    else:
        w[-1] = n
    return w


def _dense_l21(f, q1: int) -> np.ndarray:
    """L21 = [rest rows; X and y rows] as one dense (m2, q1) array."""
    if not f.q2:
        return f.c_x
    c_r = f.c_r
    c_r = c_r if isinstance(c_r, np.ndarray) else (c_r.toarray() if hasattr(c_r, "toarray") else np.asarray(c_r))
    return np.vstack([c_r.reshape(f.q2, q1), f.c_x])


def _coo(a) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, values) of a sparse Zrest'WZ1 in any of its representations."""
    if hasattr(a, "pattern") and hasattr(a.pattern, "rows"):  # PatternMatrix
        return a.pattern.rows, a.pattern.cols, a.values
    coo = sp.coo_matrix(a)
    return coo.row, coo.col, coo.data


def _sum_level_products(x3: np.ndarray, cp, q2: int, k: int) -> np.ndarray:
    """``Σ_ℓ x_ℓ A_rest,ℓ`` (k x k) for x3 = (levels, k, m2) and A_rest = [Zrest'WZ1; [X y]'WZ1]."""
    # tensordot: one matrix product over (level, row) pairs; einsum's generic loop was 5x slower
    out = np.tensordot(x3[:, :, q2:], cp.a_x1, axes=([0, 2], [1, 0]))
    if not q2:
        return out
    a_r1 = cp.a_r1
    if isinstance(a_r1, np.ndarray):
        return out + np.tensordot(x3[:, :, :q2], a_r1.reshape(q2, -1, k), axes=([0, 2], [1, 0]))
    rows, cols, values = _coo(a_r1)
    level, within = cols // k, cols % k
    for c in range(k):
        out[c] += np.bincount(within, x3[level, c, rows] * values, minlength=k)
    return out


def _times_a_r1_transpose(a_r1, dense: np.ndarray) -> np.ndarray:
    """``dense @ Zrest'WZ1'`` for a dense (rows, q1) matrix."""
    if isinstance(a_r1, np.ndarray):
        return dense @ a_r1.T
    if hasattr(a_r1, "toarray") and not sp.issparse(a_r1):  # PatternMatrix
        rows, cols, values = _coo(a_r1)
        out = np.zeros((dense.shape[0], a_r1.shape[0]))
        for i in range(dense.shape[0]):
            out[i] = np.bincount(rows, dense[i, cols] * values, minlength=a_r1.shape[0])
        return out
    return np.asarray((a_r1 @ dense.T).T)
