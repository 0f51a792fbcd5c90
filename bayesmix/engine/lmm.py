"""The profiled (RE)ML deviance of a linear mixed model: cross-products once, a blocked Cholesky per θ.

The penalized least-squares system for ``[u; β; y]`` (Bates et al. 2015, JSS 67(1)) is
factored in two blocks, as MixedModels.jl does:

* block 1 is the first random-effects term (the one with most levels): its part of
  ``Λ'Z'WZΛ + I`` is block diagonal (one k x k block per level; diagonal for scalar
  terms), so its Cholesky factor costs O(levels k^3);
* the rest — the other random-effects terms, then X, then y — is a dense Schur
  complement, small in all but the largest problems.

Everything that depends on the data alone (``Z'WZ``, ``Z'WX``, ``X'WX``, ``X'Wy``,
``y'Wy``) is computed once in :class:`CrossProducts`; each deviance evaluation only
rescales those by θ and factors the result.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp
from scipy.linalg.lapack import dtrtrs

from bayesmix.engine.dense import DenseSystem
from bayesmix.engine.gradient import blocked_gradient, theta_pattern
from bayesmix.spec.terms import RandomEffectsTerm, b_from_u


@dataclass
class GramPattern:
    """The fixed sparsity pattern of a CSR matrix M, with the entry pairs that share a column.

    ``M M'`` then costs one ``np.bincount`` over those pairs, far less than a dense
    product when M is sparse (e.g. nested grouping factors: one entry per column).
    """

    rows: np.ndarray  # row of each stored entry, CSR order
    cols: np.ndarray
    pair_a: np.ndarray
    pair_b: np.ndarray
    target: np.ndarray  # flat index rows[a] * nrows + rows[b]
    nrows: int

    @classmethod
    def from_csr(cls, m: sp.csr_matrix) -> GramPattern:
        coo_rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
        cols = m.indices
        by_col = np.argsort(cols, kind="stable")
        counts = np.bincount(cols, minlength=m.shape[1])
        starts = np.concatenate([[0], np.cumsum(counts)])
        # all ordered pairs (a, b) of entries within each column
        sizes = counts**2
        col_of_pair = np.repeat(np.arange(m.shape[1]), sizes)
        within = np.arange(sizes.sum()) - np.repeat(np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
        cnt = counts[col_of_pair]
        a = by_col[starts[col_of_pair] + within // np.maximum(cnt, 1)]
        b = by_col[starts[col_of_pair] + within % np.maximum(cnt, 1)]
        return cls(coo_rows, cols, a, b, coo_rows[a] * m.shape[0] + coo_rows[b], m.shape[0])

    def worthwhile(self, ncols: int) -> bool:
        """Pairs cost ~20 times a dense multiply-add; use them when there are far fewer."""
        return 20 * len(self.pair_a) < self.nrows * self.nrows * ncols

    def gram(self, values: np.ndarray) -> np.ndarray:
        q = self.nrows
        return np.bincount(self.target, values[self.pair_a] * values[self.pair_b], minlength=q * q).reshape(q, q)


@dataclass
class PatternMatrix:
    """A sparse matrix on a fixed :class:`GramPattern`: new values build no scipy object.

    PIRLS updates Zrest'WZ1 hundreds of times; constructing a scipy matrix each time
    cost more than the arithmetic.
    """

    values: np.ndarray  # one per pattern entry, CSR order
    pattern: GramPattern
    ncols: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.pattern.nrows, self.ncols

    def rescaled(self, row_scale: np.ndarray, col_scale: np.ndarray) -> PatternMatrix:
        """``diag(row_scale) M diag(col_scale)``."""
        p = self.pattern
        return replace(self, values=self.values * row_scale[p.rows] * col_scale[p.cols])  # keeps a subclass

    def gram(self) -> np.ndarray:
        """``M M'``, dense."""
        return self.pattern.gram(self.values)

    def times_transpose_of(self, dense: np.ndarray) -> np.ndarray:
        """``M dense'`` for a dense (m, ncols) matrix."""
        p = self.pattern
        weighted = dense[:, p.cols] * self.values
        return np.stack([np.bincount(p.rows, row, minlength=p.nrows) for row in weighted], axis=1)

    def transpose_times(self, v: np.ndarray) -> np.ndarray:
        """``M' v``."""
        p = self.pattern
        return np.bincount(p.cols, self.values * v[p.rows], minlength=self.ncols)

    def toarray(self) -> np.ndarray:
        out = np.zeros(self.shape)
        np.add.at(out, (self.pattern.rows, self.pattern.cols), self.values)
        return out


@dataclass
class CrossProducts:
    """``[Z X y]' W [Z X y]`` in the blocks the factorization uses.

    Built from sums over observations only, so data arriving in chunks can be
    accumulated with :meth:`__add__` and give the same result.
    """

    a11: np.ndarray  # (levels1, k1, k1): first term's diagonal blocks of Z1'WZ1
    a_x1: np.ndarray  # (p+1, levels1, k1): [X y]'WZ1
    a_r1: sp.csr_matrix | np.ndarray | PatternMatrix  # (q2, q1): Zrest'WZ1, dense when small
    a_rr: np.ndarray  # (q2, q2): Zrest'WZrest, dense
    a_xr: np.ndarray  # (p+1, q2): [X y]'WZrest
    a_xx: np.ndarray  # (p+1, p+1): [X y]'W[X y]
    n: int
    sum_log_weights: float

    @classmethod
    def from_data(cls, terms, X, y, weights) -> CrossProducts:
        first, rest = terms[0], terms[1:]
        w = np.asarray(weights, dtype=float)
        xy = np.column_stack([X, y])
        J1 = first.indicator()
        z1 = first.columns
        k1 = first.k
        a11 = (J1 @ (w[:, None, None] * z1[:, :, None] * z1[:, None, :]).reshape(len(w), -1)).reshape(-1, k1, k1)
        wxz = (w[:, None, None] * xy[:, :, None] * z1[:, None, :]).reshape(len(w), -1)
        a_x1 = (J1 @ wxz).reshape(first.nlevels, xy.shape[1], k1).transpose(1, 0, 2)
        if rest:
            z_rest = sp.hstack([t.z_matrix() for t in rest], format="csr")
            wz_rest = sp.diags(w) @ z_rest
            a_r1 = (wz_rest.T @ first.z_matrix()).tocsr()
            size = a_r1.shape[0] * a_r1.shape[1]
            if size <= _DENSE_LIMIT and (k1 == 1 or a_r1.nnz >= _DENSE_FILL * size):
                a_r1 = a_r1.toarray()  # small, well-filled blocks: dense arithmetic beats sparse overhead
            a_rr = (wz_rest.T @ z_rest).toarray()
            a_xr = np.asarray((wz_rest.T @ xy).T)
        else:
            a_r1 = sp.csr_matrix((0, first.q))
            a_rr = np.zeros((0, 0))
            a_xr = np.zeros((xy.shape[1], 0))
        a_xx = xy.T @ (w[:, None] * xy)
        positive = w[w > 0]
        return cls(np.ascontiguousarray(a11), np.ascontiguousarray(a_x1), a_r1, a_rr, a_xr, a_xx, int(len(positive)), float(np.log(positive).sum()))

    def __add__(self, other: CrossProducts) -> CrossProducts:
        return CrossProducts(
            self.a11 + other.a11,
            self.a_x1 + other.a_x1,
            _sum_blocks(self.a_r1, other.a_r1),
            self.a_rr + other.a_rr,
            self.a_xr + other.a_xr,
            self.a_xx + other.a_xx,
            self.n + other.n,
            self.sum_log_weights + other.sum_log_weights,
        )


@dataclass
class Factorization:
    """The blocked Cholesky factor of the augmented system at one θ."""

    theta: np.ndarray
    l1: np.ndarray  # (levels1, k1, k1) lower Cholesky blocks of block 1
    m1: np.ndarray  # (levels1, k1, k1) = T1 L1^{-T}, maps block-1 rows into u-space
    c_r: sp.csr_matrix  # (q2, q1) rest rows of L21
    c_x: np.ndarray  # (p+1, q1) X and y rows of L21
    l_s: np.ndarray  # lower Cholesky of the Schur complement over [u2, β, y]
    lambda_rest: np.ndarray | BlockLambda | None  # Λ_rest: its diagonal (scalar terms) or its k x k blocks
    q2: int
    p: int

    @property
    def ldL2(self) -> float:
        """log det(L)^2 for the random-effects part, ``log|Λ'Z'WZΛ + I|``."""
        d1 = np.diagonal(self.l1, axis1=1, axis2=2)
        d2 = np.diag(self.l_s)[: self.q2]
        return 2.0 * (np.log(d1).sum() + np.log(d2).sum())

    @property
    def ldRX2(self) -> float:
        return 2.0 * np.log(np.diag(self.l_s)[self.q2 : self.q2 + self.p]).sum()

    @property
    def pwrss(self) -> float:
        """Penalized weighted residual sum of squares, ``||W^½(y - Xβ - ZΛu)||² + ||u||²``."""
        return float(self.l_s[-1, -1] ** 2)


class ProfiledDeviance:
    """``θ -> -2 log L`` (ML) or the REML criterion, profiled over β and σ."""

    def __init__(self, terms: list[RandomEffectsTerm], X, y, weights, reml: bool, cross: CrossProducts | None = None,
                 structure: dict | None = None):
        self.terms = terms
        self.reml = reml
        self.p = X.shape[1]
        self.cross = cross if cross is not None else CrossProducts.from_data(terms, X, y, weights)
        self.q2 = self.cross.a_rr.shape[0]
        self._slices = _theta_slices(terms)
        rest = terms[1:]
        self._rest_scalar = all(t.k == 1 for t in rest)
        self._rest_nlevels = [t.nlevels for t in rest]
        # leading scalar terms of the Schur block: nested in block 1, they stay diagonal
        self._diagonal_candidates = [t.q for t in rest[: next((i for i, t in enumerate(rest) if t.k != 1), len(rest))]]
        # what factorizations have learned about the Schur blocks' structure; PIRLS shares
        # one dict across the systems it builds for the same model
        self._structure = {} if structure is None else structure
        self.evaluations = 0
        # built at the first call: PIRLS and the samplers' densities make a ProfiledDeviance per
        # system and only factorize() it, which never uses the dense path
        self._dense: DenseSystem | None = None
        self._dense_built = False
        self._a_r1_blocks = None  # BlockColumns of a sparse Zrest'WZ1 for a vector-valued first term, built once
        self.rest_theta_pattern = theta_pattern(terms[1:], theta_offset=terms[0].ntheta)  # for the gradient

    @property
    def n(self) -> int:
        return self.cross.n

    def factorize(self, theta: np.ndarray) -> Factorization | None:
        """The blocked Cholesky factor at θ, or None where the system is not positive definite."""
        cp = self.cross
        first = self.terms[0]
        T1 = first.factor_matrix(theta[self._slices[0]])
        k1 = first.k
        if k1 == 1:
            t = T1[0, 0]
            d = t * t * cp.a11[:, 0, 0] + 1.0
            l1 = np.sqrt(d)[:, None, None]
            m1 = (t / l1[:, 0, 0])[:, None, None]
        else:
            d = T1.T @ cp.a11 @ T1 + np.eye(k1)  # batched matmul: einsum's generic loop cost ~10x more
            try:
                l1 = np.linalg.cholesky(d)
            except np.linalg.LinAlgError:
                return None
            # m1_l = T1 L_l^{-T}: solve L_l X = T1' for X = L_l^{-1} T1', then transpose.
            m1 = np.linalg.solve(l1, np.broadcast_to(T1.T, l1.shape)).transpose(0, 2, 1)
        c_x = _times_block_diag(cp.a_x1, m1)
        lam_r = self._lambda_rest(theta)
        c_r = self._rest_rows(m1, lam_r) if self.q2 else None
        s = self._schur(c_r, c_x, lam_r)
        try:
            known = self._structure.get("diagonal_blocks")
            if known is not None:
                l_s, _ = _cholesky_diagonal_leads(s, known, check=False)
            else:
                l_s, n_diagonal = _cholesky_diagonal_leads(s, self._diagonal_candidates)
                if np.all(theta != 0):
                    # at a θ without zeros, zero blocks are structural (θ only rescales them)
                    self._structure["diagonal_blocks"] = self._diagonal_candidates[:n_diagonal]
        except (la.LinAlgError, np.linalg.LinAlgError):
            return None
        return Factorization(theta, l1, m1, c_r, c_x, l_s, lam_r, self.q2, self.p)

    def _lambda_rest(self, theta):
        if not self.q2:
            return None
        if self._rest_scalar:
            return np.repeat([theta[s][0] for s in self._slices[1:]], self._rest_nlevels)
        return BlockLambda([(t.nlevels, t.factor_matrix(theta[s])) for t, s in zip(self.terms[1:], self._slices[1:])])

    def _rest_rows(self, m1, lam_r):
        """Rows of L21 for the other random effects: ``Λ_rest' Zrest'WZ1 Λ1 L1^{-T}``."""
        a_r1 = self.cross.a_r1
        k1 = m1.shape[1]
        if isinstance(a_r1, PatternMatrix):  # scalar terms throughout (see WeightedSystem)
            return a_r1.rescaled(lam_r, m1[:, 0, 0])
        if isinstance(a_r1, np.ndarray):
            c_r = _times_block_diag(a_r1.reshape(a_r1.shape[0], -1, k1), m1)
        elif k1 > 1:
            if self._a_r1_blocks is None:  # PIRLS's systems share one pattern: found once, in _structure
                self._a_r1_blocks = BlockColumns.from_csr(a_r1, k1, self._structure.get("a_r1_blocks"))
                self._structure["a_r1_blocks"] = self._a_r1_blocks.pattern
            if isinstance(lam_r, np.ndarray):
                return self._a_r1_blocks.times_block_diag(m1, lam_r)
            return sp.csr_matrix(lam_r.tocsr().T @ self._a_r1_blocks.times_block_diag(m1))
        elif k1 == 1:
            c_r = a_r1 @ sp.diags(m1[:, 0, 0])
        else:
            c_r = a_r1 @ _block_diag_csr(m1)
        if isinstance(lam_r, np.ndarray):
            return lam_r[:, None] * c_r if isinstance(c_r, np.ndarray) else sp.csr_matrix(sp.diags(lam_r) @ c_r)
        return lam_r.transpose_times(c_r) if isinstance(c_r, np.ndarray) else sp.csr_matrix(lam_r.tocsr().T @ c_r)

    def _schur(self, c_r, c_x, lam_r) -> np.ndarray:
        cp = self.cross
        s_xx = cp.a_xx - c_x @ c_x.T
        if not self.q2:
            return s_xx
        if isinstance(lam_r, np.ndarray):
            s_rr = cp.a_rr * lam_r[:, None] * lam_r[None, :]
            a_xr = cp.a_xr * lam_r[None, :]
        else:  # Λ'AΛ = Λ'(Λ'A)' for the symmetric A
            s_rr = lam_r.transpose_times(lam_r.transpose_times(cp.a_rr).T)
            a_xr = lam_r.transpose_times(cp.a_xr.T).T
        if isinstance(c_r, PatternMatrix):
            s_rr = s_rr - c_r.gram()
            s_xr = a_xr - c_r.times_transpose_of(c_x).T
        else:
            crr = c_r @ c_r.T
            s_rr = s_rr - (crr if isinstance(crr, np.ndarray) else crr.toarray())
            s_xr = a_xr - np.asarray(c_r @ c_x.T).T
        q2 = self.q2
        s = np.empty((q2 + len(s_xx), q2 + len(s_xx)))
        s[:q2, :q2] = s_rr
        s.flat[: q2 * (q2 + len(s_xx)) : q2 + len(s_xx) + 1] += 1.0  # + I on the random-effects diagonal
        s[q2:, :q2] = s_xr
        s[:q2, q2:] = s_xr.T
        s[q2:, q2:] = s_xx
        return s

    def deviance_from(self, f: Factorization | None) -> float:
        if f is None:
            return np.inf
        return self._criterion(f.ldL2, f.ldRX2, f.pwrss)

    def _criterion(self, ldL2: float, ldRX2: float, pwrss: float) -> float:
        n = self.n
        if pwrss <= 0:
            return np.inf
        if self.reml:
            nmp = n - self.p
            return ldL2 + ldRX2 + nmp * (1.0 + np.log(2.0 * np.pi * pwrss / nmp)) - self.cross.sum_log_weights
        return ldL2 + n * (1.0 + np.log(2.0 * np.pi * pwrss / n)) - self.cross.sum_log_weights

    def __call__(self, theta: np.ndarray) -> float:
        self.evaluations += 1
        theta = np.asarray(theta, dtype=float)
        if self._dense_system() is not None:  # small systems: one dense Cholesky, no blocked bookkeeping
            parts = self._dense.log_determinants(theta, self.p)
            return np.inf if parts is None else self._criterion(*parts)
        return self.deviance_from(self.factorize(theta))

    def _dense_system(self) -> DenseSystem | None:
        """The dense path, built at the first evaluation (PIRLS and the samplers only factorize())."""
        if not self._dense_built:
            self._dense, self._dense_built = DenseSystem.build(self.terms, self.cross, self._slices), True
        return self._dense

    @property
    def gradient_is_cheap(self) -> bool:
        """Whether the exact gradient costs a few evaluations at most, so a gradient-based search pays.

        The dense path's costs one triangular inverse more than its value; the blocked one
        O(q1 m2²) (engine/gradient.py), a few evaluations' worth while the Schur block is small
        next to the first term's levels (measured: kb07-like q1 = 224, m2 = 137), not for
        crossed designs with a large second term.
        """
        if self._dense_system() is not None:
            return True
        m2 = self.q2 + self.p + 1
        return self.terms[0].q * m2 * m2 <= _CHEAP_GRADIENT_FLOPS

    def value_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The criterion and its exact gradient in θ; ``(inf, NaN gradient)`` where the system is not positive definite."""
        self.evaluations += 1
        theta = np.asarray(theta, dtype=float)
        failed = np.inf, np.full(len(theta), np.nan)
        if self._dense_system() is not None:
            out = self._dense.value_and_gradient(theta, self.p, self.reml, self.n)
            if out is None:
                return failed
            value, grad = self._criterion(*out[0]), out[1]
        else:
            f = self.factorize(theta)
            if f is None:
                return failed
            value, grad = self.deviance_from(f), blocked_gradient(self, f, theta)
        return (value, grad) if np.isfinite(value) and np.all(np.isfinite(grad)) else failed

    # --- the solution at a given θ ----------------------------------------------------

    def solve(self, f: Factorization) -> tuple[np.ndarray, np.ndarray]:
        """Fixed effects β and spherical random effects u (in Z's column order) at θ."""
        q2, p = self.q2, self.p
        l_top = f.l_s[:-1, :-1]
        c_top = f.l_s[-1, :-1]
        # LAPACK's triangular solve directly: scipy's wrapper costs more than the solve here
        rest_beta, info = dtrtrs(l_top, c_top, lower=1, trans=1) if len(c_top) else (c_top.copy(), 0)
        if info != 0:
            raise np.linalg.LinAlgError(f"singular triangular factor (LAPACK dtrtrs info {info})")
        u2, beta = rest_beta[:q2], rest_beta[q2 : q2 + p]
        rhs1 = f.c_x[-1] - f.c_x[:-1].T @ beta
        if q2:
            rhs1 = rhs1 - (f.c_r.transpose_times(u2) if isinstance(f.c_r, PatternMatrix) else f.c_r.T @ u2)
        k1 = f.l1.shape[1]
        rhs1 = rhs1.reshape(-1, k1)
        u1 = np.linalg.solve(f.l1.transpose(0, 2, 1), rhs1[:, :, None])[:, :, 0].ravel()
        return beta, np.concatenate([u1, u2])

    def fixef_covariance_unscaled(self, f: Factorization) -> np.ndarray:
        """``(X'V⁻¹X)⁻¹ / σ²``: inverse of R_X'R_X."""
        l_xx = f.l_s[self.q2 : self.q2 + self.p, self.q2 : self.q2 + self.p]
        inv = la.solve_triangular(l_xx, np.eye(self.p), lower=True, check_finite=False)
        return inv.T @ inv

    def b_from_u(self, theta: np.ndarray, u: np.ndarray) -> np.ndarray:
        """``b = Λ(θ) u``, term by term."""
        return b_from_u(self.terms, theta, u)


# q1·m2² below which the blocked gradient is worth computing (see gradient_is_cheap)
_CHEAP_GRADIENT_FLOPS = 2e7


def _sum_blocks(a, b):
    """Sum of two Zrest'WZ1 blocks, dense or sparse, in the representation of the first."""
    total = a + b
    return np.asarray(total) if isinstance(a, np.ndarray) else sp.csr_matrix(total)


_DENSE_LIMIT = 250_000  # entries of Zrest'WZ1 below which it is kept dense ...
# ... if at least this fraction is filled, for a vector-valued first term (BlockColumns; scalar
# first terms keep the dense rule measured before): crossed slopes on 10k rows (200 x 1000, 10% filled)
# took 4.6 ms per evaluation dense and 1.9 ms sparse for the product Zrest'WZ1 (Zrest'WZ1)'
_DENSE_FILL = 0.2


def _cholesky_diagonal_leads(s: np.ndarray, block_sizes: list[int], check: bool = True) -> tuple[np.ndarray, int]:
    """Lower Cholesky factor of ``s``, eliminating leading diagonal blocks cheaply.

    A scalar term nested in the terms before it (e.g. ``(1|a/b)``) leaves a diagonal
    block in the Schur complement; each such block is factored by square roots, and
    only what remains goes to LAPACK.  The result is exactly the Cholesky factor; also
    returned is how many of the blocks were diagonal.  ``check=False``: the blocks are
    known to be diagonal.
    """
    m = s.shape[0]
    L = np.zeros_like(s)
    pos = 0
    n_diagonal = 0
    for size in block_sizes:
        end = pos + size
        block = s[pos:end, pos:end]
        d = np.diagonal(block).copy()
        if (check and np.count_nonzero(block) > size) or np.any(d <= 0):
            break  # not diagonal (or not positive): hand the rest to LAPACK
        d = np.sqrt(d)
        L[pos:end, pos:end] = np.diag(d)
        below = s[end:, pos:end] / d
        L[end:, pos:end] = below
        s[end:, end:] -= below @ below.T
        pos = end
        n_diagonal += 1
    if pos < m:
        L[pos:, pos:] = np.linalg.cholesky(s[pos:, pos:])  # less call overhead than scipy's
    return L, n_diagonal


def _times_block_diag(a: np.ndarray, m1: np.ndarray) -> np.ndarray:
    """``a (rows, levels, k) @ blockdiag(m1)`` flattened to (rows, levels*k).

    Batched matmul per level for k >= 3, k² elementwise multiply-adds for k = 2 (measured:
    kb07-like 128 x 56 x 4: 176 µs by matmul, 483 by multiply-adds; crossed slopes
    4 x 5000 x 2: 248 µs by multiply-adds, 826 by matmul; einsum's generic loop was slower
    than both where it mattered).
    """
    rows, levels, k = a.shape
    if k == 1:
        return a[:, :, 0] * m1[None, :, 0, 0]
    if k >= 3:
        return np.matmul(a.transpose(1, 0, 2), m1).transpose(1, 0, 2).reshape(rows, -1)
    out = np.empty(a.shape)
    for col in range(k):
        acc = a[:, :, 0] * m1[None, :, 0, col]
        for j in range(1, k):
            acc += a[:, :, j] * m1[None, :, j, col]
        out[:, :, col] = acc
    return out.reshape(rows, -1)


@dataclass
class BlockLambda:
    """Λ for terms after the first: per term, ``nlevels`` copies of its k x k factor T on the diagonal.

    Applied block by block with batched matmul; building it as a scipy.sparse matrix at
    every evaluation (kron, block_diag) cost more than the whole factorization of small models.
    """

    blocks: list[tuple[int, np.ndarray]]  # (nlevels, T) per term, in Z's column order

    def transpose_times(self, m: np.ndarray) -> np.ndarray:
        """``Λ' m`` for a dense m with Λ's rows."""
        out = np.empty(m.shape)
        start = 0
        for nlevels, T in self.blocks:
            k = T.shape[0]
            end = start + nlevels * k
            out[start:end] = (T.T @ m[start:end].reshape(nlevels, k, -1)).reshape(end - start, *m.shape[1:])
            start = end
        return out

    def tocsr(self) -> sp.csr_matrix:
        return sp.block_diag([sp.kron(sp.identity(n, format="csr"), sp.csr_matrix(T)) for n, T in self.blocks],
                             format="csr")


@dataclass
class BlockPattern:
    """Where a CSR matrix's entries go in its k-wide level blocks (see BlockColumns); fixed per sparsity pattern."""

    entry_block: np.ndarray  # block of each stored entry
    entry_column: np.ndarray  # its column within the block
    block_rows: np.ndarray
    block_levels: np.ndarray
    indices: np.ndarray  # CSR column indices of the block pattern
    indptr: np.ndarray
    shape: tuple[int, int]
    source: tuple[np.ndarray, np.ndarray]  # the matrix's own (indices, indptr), to recognise it

    @classmethod
    def from_csr(cls, a: sp.csr_matrix, k: int) -> BlockPattern:
        levels = a.shape[1] // k
        rows = np.repeat(np.arange(a.shape[0], dtype=np.int64), np.diff(a.indptr))
        keys, inverse = np.unique(rows * levels + a.indices // k, return_inverse=True)  # sorted by row, then level
        block_rows, block_levels = keys // levels, keys % levels
        indices = (block_levels[:, None] * k + np.arange(k)[None, :]).ravel()
        indptr = np.concatenate([[0], np.cumsum(np.bincount(block_rows, minlength=a.shape[0]) * k)])
        return cls(inverse, a.indices % k, block_rows, block_levels, indices, indptr, a.shape,
                   (a.indices.copy(), a.indptr.copy()))

    def matches(self, a: sp.csr_matrix) -> bool:
        return (a.shape == self.shape and a.nnz == len(self.entry_block) and np.array_equal(a.indptr, self.source[1])
                and np.array_equal(a.indices, self.source[0]))


@dataclass
class BlockColumns:
    """A sparse (q2, levels·k) matrix whose stored entries come in whole k-wide level blocks.

    Zrest'WZ1 for a vector-valued first term: one row of k values per (row, level) pair
    that occurs.  ``diag(s) M blockdiag(m1)`` is then k² multiply-adds over those rows
    and one CSR construction on a fixed pattern, instead of two sparse products with
    their format conversions (crossed slopes on 100k rows: most of the evaluation).
    """

    values: np.ndarray  # (blocks, k)
    pattern: BlockPattern

    @classmethod
    def from_csr(cls, a: sp.csr_matrix, k: int, pattern: BlockPattern | None = None) -> BlockColumns:
        a = sp.csr_matrix(a)
        if pattern is None or not pattern.matches(a):
            pattern = BlockPattern.from_csr(a, k)
        values = np.zeros((len(pattern.block_rows), k))
        values[pattern.entry_block, pattern.entry_column] = a.data  # one entry per (block, column)
        return cls(values, pattern)

    def times_block_diag(self, m1: np.ndarray, row_scale: np.ndarray | None = None) -> sp.csr_matrix:
        k = m1.shape[1]
        pat = self.pattern
        m = m1[pat.block_levels]
        out = np.empty(self.values.shape)
        for col in range(k):
            acc = self.values[:, 0] * m[:, 0, col]
            for j in range(1, k):
                acc += self.values[:, j] * m[:, j, col]
            out[:, col] = acc
        if row_scale is not None:
            out *= row_scale[pat.block_rows][:, None]
        return sp.csr_matrix((out.ravel(), pat.indices, pat.indptr), shape=pat.shape)


def _block_diag_csr(blocks: np.ndarray) -> sp.csr_matrix:
    """The block-diagonal CSR matrix of (levels, k, k) blocks, from index arithmetic (no scipy block_diag)."""
    levels, k, _ = blocks.shape
    indices = (np.arange(levels)[:, None, None] * k + np.zeros((1, k, 1), int) + np.arange(k)[None, None, :]).ravel()
    indptr = np.arange(0, levels * k * k + 1, k)
    return sp.csr_matrix((blocks.ravel(), indices, indptr), shape=(levels * k, levels * k))


def _theta_slices(terms) -> list[slice]:
    out, start = [], 0
    for t in terms:
        out.append(slice(start, start + t.ntheta))
        start += t.ntheta
    return out
