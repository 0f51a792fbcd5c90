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
from functools import cached_property, partial

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp
from scipy.linalg.lapack import dpotrf, dtrtrs

# GramPattern is re-exported: PIRLS and the samplers import the fixed-pattern types from here
from bayesmix.engine.blocked import BlockColumns, GramPattern, LevelGram, PatternMatrix  # noqa: F401
from bayesmix.engine.dense import DENSE_SYSTEM_DIM, DenseSystem
from bayesmix.engine.gradient import blocked_gradient, theta_pattern
from bayesmix.spec.terms import RandomEffectsTerm, b_from_u


@dataclass
class CrossProducts:
    """``[Z X y]' W [Z X y]`` in the blocks the factorization uses.

    Built from sums over observations only, so data arriving in chunks can be
    accumulated with :meth:`__add__` and give the same result.
    """

    a11: np.ndarray  # (levels1, k1, k1): first term's diagonal blocks of Z1'WZ1
    a_x1: np.ndarray  # (p+1, levels1, k1): [X y]'WZ1
    a_r1: sp.csr_matrix | np.ndarray | PatternMatrix | BlockColumns  # (q2, q1): Zrest'WZ1, dense when small
    a_rr: np.ndarray  # (q2, q2): Zrest'WZrest, dense
    a_xr: np.ndarray  # (p+1, q2): [X y]'WZrest
    a_xx: np.ndarray  # (p+1, p+1): [X y]'W[X y]
    n: int
    sum_log_weights: float

    @classmethod
    def from_data(cls, terms, X, y, weights) -> CrossProducts:
        w = np.asarray(weights, dtype=float)
        xy = np.column_stack([X, y])
        m = sum(t.q for t in terms) + xy.shape[1]
        small = m <= DENSE_SYSTEM_DIM and len(w) * m <= _DENSE_FROM_DATA_ENTRIES
        a11, a_x1, a_r1, a_rr, a_xr, a_xx = (_dense_blocks if small else _sparse_blocks)(terms, xy, w)
        positive = w[w > 0]
        return cls(np.ascontiguousarray(a11), np.ascontiguousarray(a_x1), a_r1, a_rr, a_xr, a_xx, len(positive),
                   float(np.log(positive).sum()))

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


def _sparse_blocks(terms, xy: np.ndarray, w: np.ndarray):
    """CrossProducts' blocks by sparse products over the rows (a11, a_x1, a_r1, a_rr, a_xr, a_xx)."""
    first, rest = terms[0], terms[1:]
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
    return a11, a_x1, a_r1, a_rr, a_xr, xy.T @ (w[:, None] * xy)


def _dense_blocks(terms, xy: np.ndarray, w: np.ndarray):
    """Small models: ``[Z X y]'W[Z X y]`` as one dense product, cut into CrossProducts' blocks.

    Pixel's 102 rows took 0.74 ms through a dozen scipy.sparse constructions (index
    dtype checks, format conversions) and take ~0.05 ms as one matrix product.
    """
    n, first = len(w), terms[0]
    q = sum(t.q for t in terms)
    M = np.zeros((n, q + xy.shape[1]))
    offset, rows = 0, np.arange(n)[:, None]
    for t in terms:
        M[rows, offset + t.factor.codes[:, None] * t.k + np.arange(t.k)[None, :]] = t.columns
        offset += t.q
    M[:, q:] = xy
    A = M.T @ (w[:, None] * M)
    q1, k1 = first.q, first.k
    base = np.arange(first.nlevels)[:, None, None] * k1
    a11 = A[base + np.arange(k1)[None, :, None], base + np.arange(k1)[None, None, :]]
    a_x1 = A[q:, :q1].reshape(xy.shape[1], first.nlevels, k1)
    return (a11, a_x1, np.ascontiguousarray(A[q1:q, :q1]), np.ascontiguousarray(A[q1:q, q1:q]),
            np.ascontiguousarray(A[q:, q1:q]), np.ascontiguousarray(A[q:, q:]))


@dataclass
class Factorization:
    """The blocked Cholesky factor of the augmented system at one θ."""

    theta: np.ndarray
    l1: np.ndarray  # (levels1, k1, k1) lower Cholesky blocks of block 1
    m1: np.ndarray  # (levels1, k1, k1) = T1 L1^{-T}, maps block-1 rows into u-space
    rest_rows: object  # c_r, or a function computing it where the evaluation did without it (LevelGram)
    c_x: np.ndarray  # (p+1, q1) X and y rows of L21
    l_s: np.ndarray  # lower Cholesky of the Schur complement over [u2, β, y]
    lambda_rest: np.ndarray | BlockLambda | None  # Λ_rest: its diagonal (scalar terms) or its k x k blocks
    q2: int
    p: int

    @property
    def c_r(self):
        """(q2, q1) rest rows of L21 (sparse, dense or a PatternMatrix), computed at first use if deferred."""
        if callable(self.rest_rows):
            self.rest_rows = self.rest_rows()
        return self.rest_rows

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
        # LevelGram of a sparse Zrest'WZ1, built at the second factorization (None before and where
        # it does not apply, False where too large): PIRLS factors each of its systems once
        self._level_gram: LevelGram | None | bool = None
        self._factorizations = 0

    @property
    def n(self) -> int:
        return self.cross.n

    @cached_property
    def rest_theta_pattern(self):
        """Where θ enters Λ_rest (engine.gradient's): built when a gradient is first taken, not for
        each of the hundreds of systems PIRLS builds and only factorizes."""
        return theta_pattern(self.terms[1:], theta_offset=self.terms[0].ntheta)

    def factorize(self, theta: np.ndarray) -> Factorization | None:
        """The blocked Cholesky factor at θ, or None where the system is not positive definite."""
        cp = self.cross
        first = self.terms[0]
        T1 = first.factor_matrix(theta[self._slices[0]])
        gram = self._gram_of_rest_rows()
        # closed-form level blocks on the LevelGram route only: elsewhere (dense Zrest'WZ1, PIRLS,
        # the samplers) they keep LAPACK's rounding, so fits there are unchanged to the last bit
        blocks = _first_term_blocks(T1, cp.a11, closed_form=gram is not None)
        if blocks is None:
            return None
        l1, m1 = blocks
        c_x = _times_block_diag(cp.a_x1, m1)
        lam_r = self._lambda_rest(theta)
        if gram is not None:  # L21's rest rows are needed only for the solution: deferred
            s = self._schur_by_gram(gram, m1, c_x, lam_r)
            c_r = partial(self._rest_rows, m1, lam_r)
        else:
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
                self._a_r1_blocks = a_r1 if isinstance(a_r1, BlockColumns) else BlockColumns.from_csr(
                    a_r1, k1, self._structure.get("a_r1_blocks"))
                self._structure["a_r1_blocks"] = self._a_r1_blocks.pattern
            if isinstance(lam_r, np.ndarray):
                return self._a_r1_blocks.times_block_diag(m1, lam_r)
            return sp.csr_matrix(lam_r.tocsr().T @ self._a_r1_blocks.times_block_diag(m1))
        else:
            c_r = a_r1 @ sp.diags(m1[:, 0, 0])
        if isinstance(lam_r, np.ndarray):
            if isinstance(c_r, np.ndarray):  # a fresh product: scaled in place (a 320 MB copy on 20M Dask rows)
                c_r *= lam_r[:, None]
                return c_r
            return sp.csr_matrix(sp.diags(lam_r) @ c_r)
        return lam_r.transpose_times(c_r) if isinstance(c_r, np.ndarray) else sp.csr_matrix(lam_r.tocsr().T @ c_r)

    def _schur(self, c_r, c_x, lam_r) -> np.ndarray:
        cp = self.cross
        s_xx = cp.a_xx - c_x @ c_x.T
        if not self.q2:
            return s_xx
        if isinstance(c_r, PatternMatrix) and isinstance(lam_r, np.ndarray):
            lower = c_r.lower_gram()
            if lower is not None:
                return self._schur_on_pattern(lower, c_r, c_x, lam_r, s_xx)
        s_rr, a_xr = _scaled_by_lambda(cp.a_rr, cp.a_xr, lam_r)
        if isinstance(c_r, PatternMatrix):
            s_rr -= c_r.gram()
            s_xr = a_xr - c_r.times_transpose_of(c_x).T
        else:
            s_rr -= self._rest_gram(c_r)
            s_xr = a_xr - np.asarray(c_r @ c_x.T).T
        return _assembled(s_rr, s_xr, s_xx)

    def _schur_on_pattern(self, lower, c_r: PatternMatrix, c_x, lam_r: np.ndarray, s_xx: np.ndarray) -> np.ndarray:
        """The Schur complement's lower triangle for scalar terms throughout (PIRLS's systems), entry by entry.

        ``Λ' Zrest'WZrest Λ - C_r C_r'`` is non-zero only where two rest levels share a level
        of the first term (a pair of the rest rows' GramPattern; every non-zero of Zrest'WZrest
        is one, since each row has a first-term level): grouseticks' 181 x 181 block holds ~400.
        Those are placed into a zero matrix (only its lower triangle: all the Cholesky reads),
        not computed by dense passes over all q2² entries.
        """
        cp, q2 = self.cross, self.q2
        m = q2 + len(s_xx)
        rows, cols, gram = lower
        s = np.zeros((m, m))
        s[rows, cols] = cp.a_rr[rows, cols] * lam_r[rows] * lam_r[cols] - gram
        s_xr = cp.a_xr * lam_r[None, :] - c_r.times_transpose_of(c_x).T
        return _assembled(s[:q2, :q2], s_xr, s_xx, into=s)

    def _rest_gram(self, c_r) -> np.ndarray:
        """``C_r C_r'`` dense; on the block pattern PIRLS's systems share, by its SparseGram."""
        blocks = self._a_r1_blocks
        if sp.issparse(c_r) and blocks is not None:
            gram = blocks.pattern.sparse_gram
            if gram is not None and c_r.nnz == len(gram.indices):
                return gram.dense(c_r.data)
        crr = c_r @ c_r.T
        return crr if isinstance(crr, np.ndarray) else crr.toarray()

    def _gram_of_rest_rows(self) -> LevelGram | None:
        """The LevelGram of a sparse Zrest'WZ1 from the second factorization on; None where not used."""
        self._factorizations += 1
        if self._level_gram is None and self._factorizations >= 2 and self.q2 and sp.issparse(self.cross.a_r1):
            self._level_gram = self._build_level_gram() or False
        return self._level_gram or None

    def release_workspace(self) -> None:
        """Forget the LevelGram (256 MiB on 1M rows of crossed slopes): a fit keeps its deviance for
        profiles and refits, which rebuild it at their second factorization if they need it."""
        if self._level_gram:
            self._level_gram = None
            self._factorizations = 0

    def _build_level_gram(self) -> LevelGram | None:
        """The LevelGram where it is the cheapest way to ``A_r1 blockdiag(P) A_r1'`` and fits in memory.

        Per evaluation (ns, measured orders): the LevelGram ~1.2 per stored pair and entry of
        P; a dense A_r1 ~k per entry (forming L21's rows) + q2/20 per entry (their syrk); the
        sparse product of L21's rest rows ~5 per pair and entry.  A dense A_r1 (a well-filled
        block: 20M rows of the Dask benchmark, ~126 of 200 rest levels per level) replaces
        the sparse one in this system's cross-products when it wins and fits.
        """
        first = self.terms[0]
        k, q1, q2 = first.k, first.q, self.q2
        a_r1 = sp.csr_matrix(self.cross.a_r1)
        if k > 1:  # the blocks _rest_rows uses, on the pattern PIRLS's systems share
            if self._a_r1_blocks is None:
                self._a_r1_blocks = BlockColumns.from_csr(a_r1, k, self._structure.get("a_r1_blocks"))
                self._structure["a_r1_blocks"] = self._a_r1_blocks.pattern
            blocks = self._a_r1_blocks
        else:
            blocks = BlockColumns.from_csr(a_r1, 1)
        pat = blocks.pattern
        counts = np.bincount(pat.block_levels, minlength=first.nlevels).astype(np.int64)
        pair_entries = float((counts * (counts + 1) // 2).sum()) * k * (k + 1) / 2
        dense_ns = q2 * q1 * (k + q2 / 20)
        if 1.2 * pair_entries <= dense_ns:
            gram = LevelGram.from_blocks(blocks.values, pat.block_rows, pat.block_levels, first.nlevels, q2)
            if gram is not None:
                return gram
        if dense_ns < 5 * pair_entries and q2 * q1 * 8 <= _DENSE_REST_BYTES:
            self.cross = replace(self.cross, a_r1=a_r1.toarray())
            self._a_r1_blocks = None  # the sparse blocks are not used again: their memory goes
        return None

    def _schur_by_gram(self, gram: LevelGram, m1, c_x, lam_r) -> np.ndarray:
        """The Schur complement as ``D'(A_rest - A_r1 blockdiag(M M') A_r1')D``: no L21 rest rows.

        With ``C_r = Λ_rest' A_r1 blockdiag(M)`` the rest rows of L21, ``C_r C_r'`` is
        ``Λ_rest' (A_r1 blockdiag(M M') A_r1') Λ_rest`` (the LevelGram) and ``C_r C_x'`` is
        ``Λ_rest' A_r1 blockdiag(M) C_x'`` (a sparse times a dense (q1, p+1) matrix).  The
        rest block is written straight into the assembled matrix, scaled there; one scalar
        rest term (InstEval's lecturers) scales it in the same pass, and only its lower
        triangle is formed (the entries above the diagonal are not the Schur complement's).
        """
        cp = self.cross
        levels, k = m1.shape[0], m1.shape[1]
        q2 = self.q2
        m_cx = _times_block_diag(c_x.reshape(len(c_x), levels, k), m1.transpose(0, 2, 1))  # (blockdiag(M) C_x')'
        a_xr = cp.a_xr - np.asarray(cp.a_r1 @ m_cx.T).T
        s = np.empty((q2 + len(cp.a_xx),) * 2)
        s_rr = s[:q2, :q2]
        one_scale = isinstance(lam_r, np.ndarray) and np.all(lam_r == lam_r[0])
        if one_scale:  # the lower triangle only: all _cholesky_diagonal_leads reads of it
            gram.subtracted_from(cp.a_rr, m1, scale=float(lam_r[0]) ** 2, out=s_rr, lower_only=True)
            s_xr = a_xr * lam_r[0]
        else:
            s_rr[...], s_xr = _scaled_by_lambda(gram.subtracted_from(cp.a_rr, m1), a_xr, lam_r)
        return _assembled(s_rr, s_xr, cp.a_xx - c_x @ c_x.T, into=s)

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
        if k1 == 1:  # 1 x 1 blocks: a division (numpy's batched solve cost ~25 µs per PIRLS step on 400 levels)
            u1 = rhs1 / f.l1[:, 0, 0]
        else:
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
    """Sum of two Zrest'WZ1 blocks, dense or sparse: dense when either is, or when the sum is half filled.

    Sums of many chunks of rows (a Dask fit's tree reduction) fill the block: 20 million rows
    of crossed slopes, 63% of 200 x 200,000.  Half filled, the dense array is the smaller one
    (a CSR entry costs 12 bytes and the block patterns built from it more), and the
    factorization takes its dense route there anyway.
    """
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.asarray(a + b)
    total = sp.csr_matrix(a + b)
    size = total.shape[0] * total.shape[1]
    if total.nnz >= 0.5 * size and 8 * size <= _DENSE_REST_BYTES:
        return total.toarray()
    return total


_DENSE_LIMIT = 250_000  # entries of Zrest'WZ1 below which it is kept dense ...
# ... if at least this fraction is filled, for a vector-valued first term (BlockColumns; scalar
# first terms keep the dense rule measured before): crossed slopes on 10k rows (200 x 1000, 10% filled)
# took 4.6 ms per evaluation dense and 1.9 ms sparse for the product Zrest'WZ1 (Zrest'WZ1)'
_DENSE_FILL = 0.2
# Rows x columns of [Z X y] below which CrossProducts are one dense product (16 MB at most)
_DENSE_FROM_DATA_ENTRIES = 2_000_000
# Largest Zrest'WZ1 (bytes) made dense for repeated evaluation when that is the cheapest product
_DENSE_REST_BYTES = 512 * 2**20


def _cholesky_diagonal_leads(s: np.ndarray, block_sizes: list[int], check: bool = True) -> tuple[np.ndarray, int]:
    """Lower Cholesky factor of ``s``, eliminating leading diagonal blocks cheaply; ``s`` is overwritten.

    A scalar term nested in the terms before it (e.g. ``(1|a/b)``) leaves a diagonal
    block in the Schur complement; each such block is factored by square roots, and
    only what remains goes to LAPACK.  The result is exactly the Cholesky factor, built
    in ``s``'s storage (a fresh Schur complement: a second m x m array and its copies cost
    more than the arithmetic on PIRLS's small systems); also returned is how many of the
    blocks were diagonal.  ``check=False``: the blocks are known to be diagonal.  Only the
    lower triangle of ``s`` is read (the diagonal check, conservatively, looks at the whole
    leading block: a non-zero above the diagonal sends the rest to LAPACK).
    """
    m = s.shape[0]
    pos = 0
    n_diagonal = 0
    for size in block_sizes:
        end = pos + size
        block = s[pos:end, pos:end]
        d = np.diagonal(block).copy()
        if (check and np.count_nonzero(block) > size) or np.any(d <= 0):
            break  # not diagonal (or not positive): hand the rest to LAPACK
        np.sqrt(d, out=d)
        below = s[end:, pos:end]
        below /= d
        s[end:, end:] -= below @ below.T
        block.flat[:: size + 1] = d  # its other entries are zero: checked, or known structurally
        s[pos:end, end:] = 0.0
        pos = end
        n_diagonal += 1
    if pos < m:
        # LAPACK's dpotrf directly, on the transpose: the symmetric block read in Fortran order
        # (no copy where it is all of s), its upper factor U = L' written back; numpy's cholesky
        # copies twice and ran at half the speed (InstEval's 1157-wide Schur block: 32 vs 16 ms)
        tail = s[pos:, pos:]
        upper, info = dpotrf(tail.T, lower=0, clean=1, overwrite_a=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"the Schur complement is not positive definite (LAPACK dpotrf info {info})")
        if pos == 0 and np.may_share_memory(upper, s):
            return upper.T, n_diagonal  # s itself, now holding L
        tail[...] = upper.T
    return s, n_diagonal


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
    # in row chunks of ~4M entries: whole-array temporaries cost 2-3 copies of a (a Dask fit's
    # dense 200 x 200,000 block on 20M rows: 320 MB each, over its client's memory goal)
    step = max(1, (1 << 22) // max(1, levels * k))
    for start in range(0, rows, step):
        part, target = a[start : start + step], out[start : start + step]
        for col in range(k):
            acc = part[:, :, 0] * m1[None, :, 0, col]
            for j in range(1, k):
                acc += part[:, :, j] * m1[None, :, j, col]
            target[:, :, col] = acc
    return out.reshape(rows, -1)


def _first_term_blocks(T1: np.ndarray, a11: np.ndarray, closed_form: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """Per level of the first term: L_ℓ = chol(T1' A_ℓ T1 + I) and M_ℓ = T1 L_ℓ^{-T}; None if not positive definite.

    k = 1 always, and k = 2 with ``closed_form``, elementwise over levels (crossed slopes on
    100k rows spent 2.7 ms per evaluation in batched LAPACK Cholesky and solve for 5000
    2 x 2 blocks; on 1M rows ten times that).
    """
    k1 = len(T1)
    if k1 == 1:
        t = T1[0, 0]
        l1 = np.sqrt(t * t * a11[:, 0, 0] + 1.0)
        return l1[:, None, None], (t / l1)[:, None, None]
    if k1 == 2 and closed_form:
        (t00, t01), (t10, t11) = T1
        a, b, c = a11[:, 0, 0], a11[:, 0, 1], a11[:, 1, 1]
        at00, at01, at10, at11 = a * t00 + b * t10, a * t01 + b * t11, b * t00 + c * t10, b * t01 + c * t11
        l00 = np.sqrt(t00 * at00 + t10 * at10 + 1.0)
        l10 = (t00 * at01 + t10 * at11) / l00
        l11sq = t01 * at01 + t11 * at11 + 1.0 - l10 * l10
        if not np.all(l11sq > 0):
            return None
        l11 = np.sqrt(l11sq)
        shear = l10 / (l00 * l11)  # L^{-T} = [[1/l00, -shear], [0, 1/l11]]
        l1 = np.zeros((len(a), 2, 2))
        l1[:, 0, 0], l1[:, 1, 0], l1[:, 1, 1] = l00, l10, l11
        m1 = np.empty((len(a), 2, 2))
        m1[:, 0, 0], m1[:, 0, 1] = t00 / l00, t01 / l11 - t00 * shear
        m1[:, 1, 0], m1[:, 1, 1] = t10 / l00, t11 / l11 - t10 * shear
        return l1, m1
    d = T1.T @ a11 @ T1 + np.eye(k1)  # batched matmul: einsum's generic loop cost ~10x more
    try:
        l1 = np.linalg.cholesky(d)
    except np.linalg.LinAlgError:
        return None
    # m1_l = T1 L_l^{-T}: solve L_l X = T1' for X = L_l^{-1} T1', then transpose.
    return l1, np.linalg.solve(l1, np.broadcast_to(T1.T, l1.shape)).transpose(0, 2, 1)


def _scaled_by_lambda(a_rr: np.ndarray, a_xr: np.ndarray, lam_r) -> tuple[np.ndarray, np.ndarray]:
    """``(Λ' a_rr Λ, a_xr Λ)`` for Λ_rest given by its diagonal or as a BlockLambda."""
    if isinstance(lam_r, np.ndarray):
        scaled = a_rr * lam_r[:, None]
        scaled *= lam_r  # in place: one temporary of a_rr's size, not two
        return scaled, a_xr * lam_r[None, :]
    # Λ'AΛ = Λ'(Λ'A)' for the symmetric A
    return lam_r.transpose_times(lam_r.transpose_times(a_rr).T), lam_r.transpose_times(a_xr.T).T


def _assembled(s_rr: np.ndarray, s_xr: np.ndarray, s_xx: np.ndarray, into: np.ndarray | None = None) -> np.ndarray:
    """The Schur complement over [u2, β, y] from its blocks, + I on the random-effects diagonal.

    ``into``: the (m, m) array to fill, whose top-left block may already be ``s_rr``.
    """
    q2, m = len(s_rr), len(s_rr) + len(s_xx)
    s = np.empty((m, m)) if into is None else into
    if not np.may_share_memory(s, s_rr):  # bounds only: s_rr is s[:q2, :q2] or a separate array
        s[:q2, :q2] = s_rr
    s.flat[: q2 * m : m + 1] += 1.0
    s[q2:, :q2] = s_xr
    s[:q2, q2:] = s_xr.T
    s[q2:, q2:] = s_xx
    return s


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


def _theta_slices(terms) -> list[slice]:
    out, start = [], 0
    for t in terms:
        out.append(slice(start, start + t.ntheta))
        start += t.ntheta
    return out
