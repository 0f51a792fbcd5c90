"""The collapsed LMM log density for thousands of random effects: the engine's blocked Cholesky, gradient by selected inversion.

:class:`bayesmix.bayes.CollapsedLmm` factors ``A = Λ̃'MΛ̃/σ² + I`` densely — right for a few
hundred random effects, hopeless for InstEval's 4100.  Here the same ``A`` (``Λ̃`` holding
the terms' SDs and, when β is integrated out, its prior SDs) is factored exactly as
:class:`bayesmix.lmm.ProfiledDeviance` factors lme4's system: the first term's block is
block diagonal (one k x k block per level), the rest (other terms, β̃, y) a dense Schur
complement ``S``.  The gradient comes
from Fisher's identity and needs only the diagonal blocks of ``A⁻¹``, one per term and level
(``MΛ̃A⁻¹ = σ²Λ̃⁻ᵀ(I - A⁻¹)``): the rest's from ``S⁻¹``, the first term's from
``L_l⁻ᵀ(I + C_l'S⁻¹C_l)L_l⁻¹`` summed over the sparsity pattern of ``C_l``, the level's columns
of the Cholesky factor below block 1 (Takahashi's recursion, one block deep).
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
from numba import njit
from scipy.linalg.lapack import dtrtrs

from bayesmix.engine.lmm import (
    CrossProducts,
    GramPattern,
    PatternMatrix,
    ProfiledDeviance,
)

MAX_DENSE = 3000  # largest Schur complement (rest terms + integrated β + y) this route takes
_LOG_2PI = float(np.log(2.0 * np.pi))


def applicable(compiled) -> bool:
    """A Schur complement small enough to factor densely at every evaluation."""
    return sum(t.q for t in compiled.terms[1:]) + compiled.p + 1 <= MAX_DENSE


class BlockedCollapsedLmm:
    """:class:`bayesmix.bayes.CollapsedLmm`'s density and interface, for models with thousands of random effects.

    ``beta_prior = (means, sds)`` integrates β out as a block of "random effects" ``β̃`` with a
    fixed factor, as there; the draws from :meth:`draw_u` then lead with β̃.
    """

    blocked = True

    def __init__(self, compiled, beta_prior: tuple[np.ndarray, np.ndarray] | None = None, cross=None):
        """``cross``: the fit's cross-products of ``[Z X y - offset]``, used instead of the rows (a fit
        whose rows stay on a Dask cluster): the gradient's ``Z'W r`` and ``X'W r`` are then their
        quadratic forms (:func:`_weighted_residual_sums`)."""
        c = compiled
        if not applicable(c):
            raise ValueError(f"the blocked collapsed density factors a dense block of at most {MAX_DENSE} columns; "
                             "this model's random-effects terms after the first, with X and y, need more")
        self.terms = c.terms
        self.q = sum(t.q for t in c.terms)
        self.p = c.p
        if cross is None:
            w = c.weights
            keep = w > 0
            self.n = int(keep.sum())
            self.const = -0.5 * self.n * _LOG_2PI + 0.5 * float(np.log(w[keep]).sum())
            self.X, self.y, self.w = c.X, c.y - c.offset, w
            self.indicators = [t.indicator() for t in c.terms]
            cross = CrossProducts.from_data(c.terms, c.X, self.y, w)
        else:
            self.n = int(cross.n)
            self.const = -0.5 * self.n * _LOG_2PI + 0.5 * float(cross.sum_log_weights)
            self.X = self.y = self.w = None
        if len(c.terms) > 1 and all(t.k == 1 for t in c.terms):  # the engine's scalar fast path, in numba
            cross = replace(cross, a_r1=_ColumnPatternMatrix.from_matrix(cross.a_r1))
        self.cross = cross
        self.beta_mean = self.beta_factor = None
        self.p_integrated = 0
        if beta_prior is not None:
            mean, sd = (np.asarray(a, dtype=float) for a in beta_prior)
            self.beta_mean, self.beta_factor, self.p_integrated = mean, np.diag(sd), c.p
        self._structure: dict = {}

    # --- the factorization at (β, σ, SDs) -------------------------------------------------

    def _system(self, beta, sigma, Ls):
        """ProfiledDeviance on the scaled cross-products: rows [X̃; ỹ] = T [X; y], relative θ = sd/σ."""
        p = self.p
        if self.p_integrated:
            sd = np.diag(self.beta_factor)
            T = np.zeros((p + 1, p + 1))
            T[np.arange(p), np.arange(p)] = sd / sigma
            T[p, :p], T[p, p] = -self.beta_mean / sigma, 1.0 / sigma
        else:
            T = np.concatenate([-np.asarray(beta, dtype=float), [1.0]])[None, :] / sigma
        cp = self.cross
        a_xx = T @ cp.a_xx @ T.T
        a_xx[np.arange(self.p_integrated), np.arange(self.p_integrated)] += 1.0  # β̃'s N(0, I) prior
        scaled = replace(cp, a_x1=np.einsum("ij,jlk->ilk", T, cp.a_x1), a_xr=T @ cp.a_xr, a_xx=a_xx)
        engine = ProfiledDeviance(self.terms, np.zeros((0, self.p_integrated)), None, None, reml=False,
                                  cross=scaled, structure=self._structure)
        theta = np.concatenate([L[t.theta_rows_cols] for t, L in zip(self.terms, Ls)]) / sigma
        f = engine.factorize(theta)
        if f is None:
            raise np.linalg.LinAlgError("the collapsed system is not positive definite")
        return engine, f

    def value_and_grad(self, beta, sigma, Ls):
        engine, f = self._system(beta, sigma, Ls)
        q2, p_int = engine.q2, self.p_integrated
        l_top = f.l_s[:-1, :-1]
        l_yy2 = float(f.l_s[-1, -1] ** 2)
        half_logdet = float(np.log(np.diagonal(f.l1, axis1=1, axis2=2)).sum() + np.log(np.diag(l_top)).sum())
        value = self.const - self.n * np.log(sigma) - half_logdet - 0.5 * l_yy2
        beta_t, u = engine.solve(f)
        blocks, beta_diag = self._inverse_blocks(f, l_top, q2, p_int)
        z_w_r, x_w_r = self._weighted_residuals(beta, beta_t, u, Ls)
        d_Ls = []
        for term, R, L, U, B in zip(self.terms, z_w_r, Ls, self._per_level(u), blocks):
            # E[∂ℓ/∂L] = Σ_l r_l ū_l'/σ² - (MΛA⁻¹)_ll/σ², and (MΛA⁻¹)_ll = σ² L⁻ᵀ(I - A⁻¹_ll); R = Z'W r per level
            unexplained = term.nlevels * np.eye(term.k) - B.sum(axis=0)
            d_Ls.append(R.T @ U / sigma**2 - np.linalg.solve(L.T, unexplained))
        mean_sq = float(u @ u + beta_t @ beta_t)
        trace = float(sum(np.trace(B, axis1=1, axis2=2).sum() for B in blocks) + beta_diag.sum())
        d_sigma = -self.n / sigma + (l_yy2 - mean_sq + self.q + p_int - trace) / sigma
        d_beta = np.zeros(0) if p_int else x_w_r / sigma**2
        return value, d_beta, d_sigma, d_Ls

    def _weighted_residuals(self, beta, beta_t, u, Ls) -> tuple[list[np.ndarray], np.ndarray]:
        """``Z_t'W r`` per term (levels, k) and ``X'W r`` at the conditional means, r = y - Xβ - Zb: from
        the rows, or (a rowless fit) from the cross-products."""
        if self.p_integrated:
            beta = self.beta_mean + np.diag(self.beta_factor) * beta_t
        b = [U @ L.T for L, U in zip(Ls, self._per_level(u))]
        if self.X is None:
            return _weighted_residual_sums(self.cross, self.terms, self.p, beta, b)
        resid = self._residual(beta, beta_t, u, Ls)
        wr = self.w * resid
        return [J @ (wr[:, None] * t.columns) for t, J in zip(self.terms, self.indicators)], self.X.T @ wr

    def _per_level(self, u) -> list[np.ndarray]:
        """u split by term, (levels, k) each."""
        out, start = [], 0
        for t in self.terms:
            out.append(u[start : start + t.q].reshape(t.nlevels, t.k))
            start += t.q
        return out

    def _inverse_blocks(self, f, l_top, q2, p_int) -> tuple[list[np.ndarray], np.ndarray]:
        """Each term's diagonal blocks of A⁻¹ (levels, k, k), and β̃'s diagonal.

        The rest's come from S⁻¹; block 1's from Takahashi's formula
        ``A⁻¹_ll = L_l⁻ᵀ (I + C_l'S⁻¹C_l) L_l⁻¹`` with C_l the level's columns of the factor below it.
        """
        s_inv = _inverse_from_cholesky(l_top)  # S⁻¹'s lower triangle
        first = self.terms[0]
        k1 = first.k
        c_x = np.ascontiguousarray(f.c_x[:-1])  # β̃ rows of the factor below block 1 (the y row dropped)
        sxx = np.tril(s_inv[q2:, q2:])
        sxx = sxx + sxx.T - np.diag(np.diag(sxx))
        cx3 = c_x.reshape(p_int, first.nlevels, k1)
        quad = np.einsum("jla,jk,klb->lab", cx3, sxx, cx3)
        if q2:
            indptr, indices, data = _columns_of(f.c_r)
            quad += _level_quadratic(indptr, indices, data, s_inv, c_x, q2, k1)
        l_inv = np.linalg.inv(f.l1)
        blocks = [np.swapaxes(l_inv, 1, 2) @ (np.eye(k1) + quad) @ l_inv]
        start = 0
        for t in self.terms[1:]:
            ix = start + np.arange(t.q).reshape(t.nlevels, t.k)
            a, b = ix[:, :, None], ix[:, None, :]
            blocks.append(s_inv[np.maximum(a, b), np.minimum(a, b)])  # from the lower triangle
            start += t.q
        return blocks, np.diag(s_inv)[q2:]

    def _residual(self, beta, beta_t, u, Ls) -> np.ndarray:
        """y - offset - Xβ - Zb at the conditional means (β = its prior mean + sd·β̃ when integrated)."""
        if self.p_integrated:
            beta = self.beta_mean + np.diag(self.beta_factor) * beta_t
        resid = self.y - self.X @ beta
        for term, L, U in zip(self.terms, Ls, self._per_level(u)):
            b = U @ L.T
            resid -= np.einsum("ij,ij->i", term.columns, b[term.factor.codes])
        return resid

    def draw_u(self, beta, sigma, Ls, rng) -> np.ndarray:
        """[β̃ (when integrated), u] from N(A⁻¹c, A⁻¹): the conditional mean plus L⁻ᵀz, block by block."""
        engine, f = self._system(beta, sigma, Ls)
        q2, p_int = engine.q2, self.p_integrated
        beta_t, u = engine.solve(f)
        q1 = f.l1.shape[0] * f.l1.shape[1]
        z = rng.standard_normal(q1 + q2 + p_int)
        x_rest, info = dtrtrs(f.l_s[:-1, :-1], z[q1:], lower=1, trans=1) if q2 + p_int else (z[q1:], 0)
        if info != 0:
            raise np.linalg.LinAlgError(f"LAPACK dtrtrs info {info}")
        rhs1 = z[:q1] - f.c_x[:-1].T @ x_rest[q2:]
        if q2:
            c_r = f.c_r
            rhs1 -= c_r.transpose_times(x_rest[:q2]) if isinstance(c_r, PatternMatrix) else c_r.T @ x_rest[:q2]
        k1 = f.l1.shape[1]
        x1 = np.linalg.solve(np.swapaxes(f.l1, 1, 2), rhs1.reshape(-1, k1)[:, :, None])[:, :, 0].ravel()
        return np.concatenate([beta_t + x_rest[q2:], u + np.concatenate([x1, x_rest[:q2]])])


def _weighted_residual_sums(cp: CrossProducts, terms, p: int, beta, b) -> tuple[list[np.ndarray], np.ndarray]:
    """``Z'W(y - Xβ - Zb)`` per term and ``X'W(y - Xβ - Zb)`` from the blocks of ``[Z X y]'W[Z X y]``
    (b per term, (levels, k)): Z1'WZ1 is block diagonal, one k x k block per level of the first term."""
    first = terms[0]
    b1 = b[0].ravel()
    b_rest = np.concatenate([x.ravel() for x in b[1:]]) if len(b) > 1 else np.zeros(0)
    x1 = cp.a_x1.reshape(p + 1, first.q)  # [X y]'WZ1
    a_r1 = cp.a_r1
    if isinstance(a_r1, PatternMatrix):
        r1_b1, r1t_rest = a_r1.times_transpose_of(b1[None, :])[:, 0], a_r1.transpose_times(b_rest)
    else:
        r1_b1, r1t_rest = np.asarray(a_r1 @ b1).ravel(), np.asarray(a_r1.T @ b_rest).ravel()
    z1 = x1[p] - x1[:p].T @ beta - np.einsum("lab,lb->la", cp.a11, b[0]).ravel() - r1t_rest
    z_rest = cp.a_xr[p] - cp.a_xr[:p].T @ beta - r1_b1 - cp.a_rr @ b_rest
    x = cp.a_xx[:p, p] - cp.a_xx[:p, :p] @ beta - x1[:p] @ b1 - cp.a_xr[:p] @ b_rest
    out, start = [z1.reshape(first.nlevels, first.k)], 0
    for t in terms[1:]:
        out.append(z_rest[start : start + t.q].reshape(t.nlevels, t.k))
        start += t.q
    return out, x


def _inverse_from_cholesky(l_lower: np.ndarray) -> np.ndarray:
    """The lower triangle of ``(L L')⁻¹`` from a C-ordered lower factor L (LAPACK dpotri).

    Called through ctypes: scipy's wrapper would first copy L to Fortran order, and holds the
    GIL, which keeps nutpie's chains from overlapping.  A C-ordered lower triangle is, to
    Fortran, an upper one.
    """
    out = np.array(l_lower, order="C", copy=True)
    n, info = ctypes.c_int(out.shape[0]), ctypes.c_int(0)
    if out.shape[0]:
        _dpotri()(b"U", ctypes.byref(n), out.ctypes.data, ctypes.byref(n), ctypes.byref(info))
    if info.value != 0:
        raise np.linalg.LinAlgError(f"LAPACK dpotri info {info.value}")
    return out


@functools.cache
def _dpotri():
    import scipy.linalg.cython_lapack as lapack

    capsule = lapack.__pyx_capi__["dpotri"]
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype, api.PyCapsule_GetName.argtypes = ctypes.c_char_p, [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    address = api.PyCapsule_GetPointer(capsule, api.PyCapsule_GetName(capsule))
    int_p = ctypes.POINTER(ctypes.c_int)
    return ctypes.CFUNCTYPE(None, ctypes.c_char_p, int_p, ctypes.c_void_p, int_p, int_p)(address)


@dataclass
class _ColumnPatternMatrix(PatternMatrix):
    """Zrest'WZ1 on a fixed pattern, its entries also grouped by column (a level of the first term).

    The engine's bincount products cost ~35 ms each on InstEval's 2.5 million entry pairs; these
    loops over the columns take a few.
    """

    col_ptr: np.ndarray = None
    entries: np.ndarray = None  # stored entries, ordered by column
    col_rows: np.ndarray = None  # their rows, in that order

    @classmethod
    def from_matrix(cls, a_r1) -> _ColumnPatternMatrix:
        csr = sp.csr_matrix(a_r1)
        csr.eliminate_zeros()
        csr.sort_indices()
        rows, cols = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr)), csr.indices
        none = np.zeros(0, dtype=np.int64)  # no entry pairs: gram() below needs none
        pattern = GramPattern(rows, cols, none, none, none, csr.shape[0])
        entries = np.argsort(cols, kind="stable").astype(np.int64)
        col_ptr = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=csr.shape[1]))]).astype(np.int64)
        return cls(csr.data.copy(), pattern, csr.shape[1], col_ptr, entries, rows[entries])

    def by_column(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(column pointers, row indices, values), CSC style."""
        return self.col_ptr, self.col_rows, self.values[self.entries]

    def gram(self) -> np.ndarray:
        return _column_gram(*self.by_column(), self.pattern.nrows)

    def lower_gram(self) -> None:
        """None: this pattern keeps no entry pairs to place ``M M'`` by, so the engine forms it densely (gram())."""
        return None

    def times_transpose_of(self, dense: np.ndarray) -> np.ndarray:
        return _times_transpose(self.pattern.rows, self.pattern.cols, self.values, np.ascontiguousarray(dense),
                                self.pattern.nrows)


@njit(cache=True, nogil=True)
def _column_gram(col_ptr, rows, values, nrows):
    """``M M'`` from M by column."""
    out = np.zeros((nrows, nrows))
    for col in range(len(col_ptr) - 1):
        for ia in range(col_ptr[col], col_ptr[col + 1]):
            ra, va = rows[ia], values[ia]
            for ib in range(ia, col_ptr[col + 1]):
                out[ra, rows[ib]] += va * values[ib]
    for i in range(nrows):  # pairs were visited once: mirror (rows within a column are in increasing order)
        for j in range(i):
            total = out[i, j] + out[j, i]
            out[i, j] = total
            out[j, i] = total
    return out


@njit(cache=True, nogil=True)
def _times_transpose(rows, cols, values, dense, nrows):
    out = np.zeros((nrows, dense.shape[0]))
    for e in range(len(values)):
        r, c, v = rows[e], cols[e], values[e]
        for j in range(dense.shape[0]):
            out[r, j] += v * dense[j, c]
    return out


def _columns_of(c_r):
    """The factor's rows below block 1 for the other terms, by column: (indptr, row indices, values)."""
    if isinstance(c_r, _ColumnPatternMatrix):
        return c_r.by_column()
    csc = sp.csc_matrix(c_r)
    return csc.indptr.astype(np.int64), csc.indices.astype(np.int64), csc.data


@njit(cache=True, nogil=True)
def _level_quadratic(indptr, indices, data, s_inv_lower, c_x, q2, k1):
    """``C_l'S⁻¹C_l`` per level l (k1 x k1), less the β̃-β̃ part: C's stored entries (rows < q2) paired
    within the level's columns, and each with β̃'s rows (q2 + j, dense in c_x).

    ``s_inv_lower`` holds S⁻¹ in its lower triangle only (dpotri's output).
    """
    nlevels = (len(indptr) - 1) // k1
    p = c_x.shape[0]
    out = np.zeros((nlevels, k1, k1))
    for lvl in range(nlevels):
        for a in range(k1):
            ca = lvl * k1 + a
            for b in range(a, k1):
                cb = lvl * k1 + b
                acc = 0.0
                for ia in range(indptr[ca], indptr[ca + 1]):
                    ra, va = indices[ia], data[ia]
                    if a == b:  # symmetric: each unordered pair once
                        acc += va * va * s_inv_lower[ra, ra]
                        first, weight = ia + 1, 2.0
                    else:
                        first, weight = indptr[cb], 1.0
                    for ib in range(first, indptr[cb + 1]):
                        rb = indices[ib]
                        acc += weight * va * data[ib] * (s_inv_lower[ra, rb] if ra >= rb else s_inv_lower[rb, ra])
                    cross = 0.0
                    for j in range(p):
                        cross += s_inv_lower[q2 + j, ra] * c_x[j, cb]
                    acc += va * cross
                for ib in range(indptr[cb], indptr[cb + 1]):
                    rb, vb = indices[ib], data[ib]
                    cross = 0.0
                    for j in range(p):
                        cross += s_inv_lower[q2 + j, rb] * c_x[j, ca]
                    acc += vb * cross
                out[lvl, a, b] = acc
                out[lvl, b, a] = acc
    return out
