"""The whole penalized least-squares system as one dense matrix: small models' fast path.

Below a few hundred rows and columns of ``[u; β; y]`` one LAPACK Cholesky of the whole
system costs less than the blocked factorization's bookkeeping (engine/lmm.py); the same
factor also gives the exact gradient in θ with one triangular inverse.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg.lapack import dpotrf, dtrtri

from bayesmix.engine.gradient import criterion_weights, theta_pattern

# Largest [u; β; y] dimension factored densely at each evaluation: below it one LAPACK
# Cholesky of the whole system (O(m³) flops, few calls) beats the blocked path's Python
# overhead (measured: Pixel m = 46, two slope terms on 20 groups m = 81, sleepstudy m = 39).
DENSE_SYSTEM_DIM = 160


class DenseSystem:
    """The whole system ``[Z X y]'W[Z X y]`` as one dense matrix A, for small models.

    At θ the deviance needs the Cholesky factor of ``D'AD + diag(I_q, 0)`` with
    ``D = blockdiag(Λ(θ), I)``.  D is its diagonal plus, for vector-valued terms, k-1
    sub-diagonal "layers" (the entries ``(c+δ, c)`` of every level's T, whose columns c
    are distinct), so ``D'AD`` is a few elementwise O(m²) passes with precomputed
    indices, then one ``dpotrf``: the same factor as the blocked path (the same matrix in
    the same order) in a dozen library calls, against the blocked path's hundred.
    """

    def __init__(self, A: np.ndarray, q: int, diagonal_index: np.ndarray, layers: list[tuple], pattern: tuple):
        self.A = A
        self.q = q
        self._diagonal_index = diagonal_index  # θ index of each diagonal entry of D (-1: the X, y identity)
        self._layers = layers  # (rows, cols, θ index) of each sub-diagonal layer
        self._pattern = pattern  # (row, column, θ index) of every θ in D, for the gradient

    @classmethod
    def build(cls, terms, cross, slices) -> DenseSystem | None:
        """From a model's CrossProducts; None when the system is too large for the dense path."""
        q1 = terms[0].q
        q2 = cross.a_rr.shape[0]
        p1 = cross.a_xx.shape[0]
        m = q1 + q2 + p1
        if m > DENSE_SYSTEM_DIM:
            return None
        A = np.zeros((m, m))
        k1 = terms[0].k
        base = np.arange(terms[0].nlevels)[:, None, None] * k1
        A[base + np.arange(k1)[None, :, None], base + np.arange(k1)[None, None, :]] = cross.a11
        a_r1 = cross.a_r1
        A[q1 : q1 + q2, :q1] = a_r1 if isinstance(a_r1, np.ndarray) else a_r1.toarray()
        A[q1 + q2 :, :q1] = cross.a_x1.reshape(p1, q1)
        A[q1 : q1 + q2, q1 : q1 + q2] = cross.a_rr
        A[q1 + q2 :, q1 : q1 + q2] = cross.a_xr
        A[q1 + q2 :, q1 + q2 :] = cross.a_xx
        A = np.tril(A) + np.tril(A, -1).T  # the blocks above the diagonal are the lower triangle's
        diagonal = np.full(m, -1)
        by_offset: dict[int, list] = {}
        offset = 0
        for term, sl in zip(terms, slices):
            level = offset + np.arange(term.nlevels)[:, None] * term.k
            for j, (r, c) in enumerate(zip(*term.theta_rows_cols)):
                rows, cols = level[:, 0] + r, level[:, 0] + c
                if r == c:
                    diagonal[rows] = sl.start + j
                else:
                    by_offset.setdefault(r - c, []).append((rows, cols, np.full(term.nlevels, sl.start + j)))
            offset += term.q
        layers = [tuple(np.concatenate(parts) for parts in zip(*entries)) for entries in by_offset.values()]
        return cls(A, q1 + q2, diagonal, layers, theta_pattern(terms))

    def log_determinants(self, theta: np.ndarray, p: int) -> tuple[float, float, float] | None:
        """``(log|Λ'Z'WZΛ + I|, log|R_X|², pwrss)`` at θ, or None where the system is not positive definite."""
        factor = self._factor(theta)
        return None if factor is None else self._parts(factor[1], p)

    def _parts(self, L: np.ndarray, p: int) -> tuple[float, float, float]:
        q = self.q
        logd = np.log(np.diagonal(L))
        return 2.0 * logd[:q].sum(), 2.0 * logd[q : q + p].sum(), float(L[-1, -1] ** 2)

    def _factor(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """``(AD, L)``: A times D(θ), and the lower Cholesky factor L of ``D'AD + diag(I_q, 0)`` (None if not PD)."""
        A = self.A
        d = np.append(theta, 1.0)[self._diagonal_index]
        AD = A * d  # columns scaled by D's diagonal, then each layer's sub-diagonal entries
        for rows, cols, index in self._layers:
            AD[:, cols] += A[:, rows] * theta[index]
        M = AD * d[:, None]  # D'(AD), rows likewise
        for rows, cols, index in self._layers:
            M[cols] += AD[rows] * theta[index][:, None]
        q = self.q
        M.flat[: q * (len(M) + 1) : len(M) + 1] += 1.0
        # M is symmetric, so its transpose (Fortran order, no copy) is what LAPACK reads; clean=1
        # zeroes the entries above the diagonal, so that triangular inverses of L are clean too
        L, info = dpotrf(M.T, lower=1, clean=1, overwrite_a=1)
        return None if info != 0 else (AD, L)

    def value_and_gradient(self, theta: np.ndarray, p: int, reml: bool, n: int):
        """``((log|L|², log|R_X|², pwrss), ∂criterion/∂θ)`` at θ, or None where the system is not PD.

        ``∂/∂θ_i = 2 Σ_{(r,c) ∈ E_i} (W D'A)[c, r]`` with ``W = L⁻ᵀ diag(w) L⁻¹`` (derived in
        engine/gradient.py, which computes it from the blocked factor); here W is formed whole:
        one triangular inverse and one product, O(m³) like the factorization itself.
        """
        factor = self._factor(theta)
        if factor is None:
            return None
        AD, L = factor
        m = len(L)
        Linv, info = dtrtri(L, lower=1)  # L is clean above the diagonal, and so is its inverse
        if info != 0:
            return None
        W = (Linv.T * criterion_weights(m, self.q, p, n, reml)) @ Linv
        rows, cols, index = self._pattern
        contributions = np.einsum("ij,ij->i", W[cols], AD[rows])
        grad = 2.0 * np.bincount(index, contributions, minlength=len(theta))
        return self._parts(L, p), grad
