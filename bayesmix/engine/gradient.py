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
    q2 = deviance.q2
    m2 = f.l_s.shape[0]
    w2 = criterion_weights(m2, q2, deviance.p, deviance.n, deviance.reml)
    ls_inv, info = dtrtri(f.l_s, lower=1)
    if info != 0:
        return np.full(len(theta), np.nan)
    ls_inv = np.tril(ls_inv)
    w22 = (ls_inv.T * w2) @ ls_inv
    l1_inv = np.linalg.inv(f.l1)
    h_rest, h_x = _l21_times_l1_inverse(f, l1_inv, q1)
    # E' = (W22 H)', (q1, m2), row-major: the sparse products below then read contiguous rows
    et = _h_transpose_times_w22(h_rest, h_x, w22, q2)
    T1 = first.factor_matrix(theta[: first.ntheta])

    grad = np.zeros(len(theta))
    # the first term: Σ_ℓ (W D'A)_ℓℓ = Σ_ℓ W11_ℓℓ T1' A11_ℓ + Σ_ℓ (W12 D_rest')_ℓ A_rest,ℓ, W12 = -H'W22 = -E'
    w11 = l1_inv.transpose(0, 2, 1) @ l1_inv + _level_blocks_of_h_times_e(h_rest, h_x, et, levels, k, q2)
    s = ((w11 @ T1.T) @ cp.a11).sum(axis=0)
    et_d = et.copy()
    et_d[:, :q2] = _lambda_rows(f.lambda_rest, et[:, :q2].T).T  # E' D_rest' = (D_rest E)'
    s -= _sum_level_products(et_d.reshape(levels, k, m2), cp, q2, k)
    r1, c1 = first.theta_rows_cols
    grad[: first.ntheta] = 2.0 * s[c1, r1]
    if q2:
        # the other terms: (W D'A) on the u2 rows and columns = (W21 Λ1') A_1,u2 + (W22 D_rest') A_rest,u2,
        # W21 Λ1' = -E Λ1' = -(Λ1 E')'
        l1_et = np.ascontiguousarray((T1 @ et[:, :q2].reshape(levels, k, q2)).reshape(q1, q2))
        y = -_a_r1_times(cp.a_r1, l1_et).T
        d_w22 = w22.copy()
        d_w22[:q2] = _lambda_rows(f.lambda_rest, w22[:q2])
        w22_d = d_w22[:, :q2].T  # (W22 D_rest')[:q2] = ((D_rest W22)[:, :q2])'
        y += w22_d[:, :q2] @ cp.a_rr + w22_d[:, q2:] @ cp.a_xr
        rows, cols, index = deviance.rest_theta_pattern
        grad += 2.0 * np.bincount(index, y[cols, rows], minlength=len(theta))
    return grad


def _l21_times_l1_inverse(f, l1_inv: np.ndarray, q1: int):
    """H = L21 L1⁻¹ as (rest rows: sparse or dense, X and y rows: dense); level blocks times l1_ℓ⁻¹."""
    levels, k, _ = l1_inv.shape
    h_x = (f.c_x.reshape(-1, levels, k).transpose(1, 0, 2) @ l1_inv).transpose(1, 0, 2).reshape(-1, q1)
    if not f.q2:
        return None, h_x
    c_r = f.c_r
    if isinstance(c_r, np.ndarray):
        return (c_r.reshape(-1, levels, k).transpose(1, 0, 2) @ l1_inv).transpose(1, 0, 2).reshape(-1, q1), h_x
    rows, cols, values = _coo(c_r)
    return sp.csr_matrix(sp.csr_matrix((values, (rows, cols)), shape=(f.q2, q1)) @ _block_diag(l1_inv)), h_x


def _block_diag(blocks: np.ndarray) -> sp.csr_matrix:
    levels, k, _ = blocks.shape
    indices = np.tile(np.arange(k), levels * k) + np.repeat(np.arange(levels) * k, k * k)
    return sp.csr_matrix((blocks.ravel(), indices, np.arange(0, levels * k * k + 1, k)), shape=(levels * k, levels * k))


def _h_transpose_times_w22(h_rest, h_x: np.ndarray, w22: np.ndarray, q2: int) -> np.ndarray:
    """``H' W22`` (q1, m2) with H's rest rows sparse or dense."""
    out = h_x.T @ w22[q2:]
    if h_rest is None:
        return out
    if isinstance(h_rest, np.ndarray):
        return out + h_rest.T @ w22[:q2]
    return out + sp.csr_matrix(h_rest.T) @ np.ascontiguousarray(w22[:q2])  # CSR rows times contiguous rows


def _level_blocks_of_h_times_e(h_rest, h_x, et, levels: int, k: int, q2: int) -> np.ndarray:
    """``H_ℓ' E_ℓ`` per level ℓ (levels, k, k): the level blocks of H' W22 H, from E' = (W22 H)'."""
    e3 = et.reshape(levels, k, -1)  # (levels, k, m2)

    def dense_part(h, rows):
        return h.reshape(-1, levels, k).transpose(1, 2, 0) @ e3[:, :, rows].transpose(0, 2, 1)

    out = dense_part(h_x, slice(q2, None))
    if h_rest is None:
        return out
    if isinstance(h_rest, np.ndarray):
        return out + dense_part(h_rest, slice(0, q2))
    coo = h_rest.tocoo()
    level, a = coo.col // k, coo.col % k
    flat = np.zeros(levels * k * k)
    for b in range(k):
        flat += np.bincount((level * k + a) * k + b, coo.data * e3[level, b, coo.row], minlength=levels * k * k)
    return out + flat.reshape(levels, k, k)


def _lambda_rows(lam, m: np.ndarray) -> np.ndarray:
    """``Λ_rest m`` for a dense m with Λ_rest's columns as rows: its diagonal or per-term k x k blocks."""
    if lam is None:  # no terms after the first
        return m
    if isinstance(lam, np.ndarray):
        return lam[:, None] * m
    out = np.empty(m.shape)
    start = 0
    for nlevels, T in lam.blocks:
        end = start + nlevels * T.shape[0]
        out[start:end] = (T @ m[start:end].reshape(nlevels, T.shape[0], -1)).reshape(end - start, -1)
        start = end
    return out


def criterion_weights(m2: int, q2: int, p: int, n: int, reml: bool) -> np.ndarray:
    """w on the rows [u, β, y] of a system of dimension m2 with q2 random effects (see the module docstring).

    The blocked gradient passes its Schur block's rows [u2, β, y]; the dense path the whole system's."""
    w = np.zeros(m2)
    w[:q2] = 1.0
    if reml:
        w[q2 : q2 + p] = 1.0
        w[-1] = n - p
    else:
        w[-1] = n
    return w


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


def _a_r1_times(a_r1, dense: np.ndarray) -> np.ndarray:
    """``Zrest'WZ1 @ dense`` for a dense (q1, cols) matrix, in any representation of Zrest'WZ1."""
    if isinstance(a_r1, np.ndarray) or sp.issparse(a_r1):
        return np.asarray(a_r1 @ dense)
    rows, cols, values = _coo(a_r1)  # PatternMatrix
    return np.asarray(sp.csr_matrix((values, (rows, cols)), shape=a_r1.shape) @ dense)
