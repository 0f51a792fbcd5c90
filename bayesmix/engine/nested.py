"""PIRLS's weighted least-squares systems for a chain of nested scalar terms, eliminated on their tree.

When every random-effects term is scalar and each is nested in the next, as lme4 orders them
(grouseticks' ``(1|INDEX) + (1|BROOD) + (1|LOCATION)``: observations in broods in locations),
the system ``[ZΛ X r]'W[ZΛ X r] + diag(I, 0)`` is a tree: a level of term j meets only its own
ancestor in each later term.  Eliminating term 0's levels, then term 1's, ... therefore never
fills in: every step is per-level arithmetic (sums over each level's children), and what is
left is the (p + 1)-square block of the fixed effects and the response.  This is the blocked
Cholesky of :mod:`bayesmix.engine.lmm` for that structure, without its dense Schur complement
(its cost on grouseticks was Python overhead around a 182-wide dense matrix, not arithmetic).

:class:`NestedChain` is PIRLS's deviance object for such models (``solve`` and
``fixef_covariance_unscaled`` as :class:`~bayesmix.engine.lmm.ProfiledDeviance`'s); its
:class:`NestedFactor` has the ``ldL2`` the Laplace objective reads.  Conditional variances and
the rest of the results take the general factorization (``GlmmObjective.general_state``).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import scipy.linalg as la
from scipy.linalg.lapack import dpotrf, dtrtrs

from bayesmix.engine.blocked import csr_times_dense


@dataclass
class NestedFactor:
    """The Cholesky factor of one nested system: per term its diagonal, its entries below (to each later
    term's ancestor level and to [X r]), and the factor of the [X r] block."""

    d: list[np.ndarray]  # per term: the diagonal, one entry per level
    below: dict[tuple[int, int], np.ndarray]  # (j, k), k > j: entry of each level of j in its ancestor's row
    below_x: list[np.ndarray]  # per term: (levels, p + 1) entries in the rows of X and r
    tail: np.ndarray  # lower Cholesky factor of the (p + 1)-square [X r] block

    @property
    def ldL2(self) -> float:
        """log det(L)^2 for the random-effects part, ``log|Λ'Z'WZΛ + I|``."""
        return 2.0 * float(sum(np.log(d).sum() for d in self.d))


class NestedChain:
    """The tree of a chain of nested scalar terms, found once per model (:meth:`of`: None where it does not apply)."""

    def __init__(self, terms, parents: list[np.ndarray]):
        """``parents[j]``: each level of term j's level in term j + 1 (see :meth:`of`)."""
        self.codes = [t.factor.codes for t in terms]
        self.z = [np.ascontiguousarray(t.columns[:, 0], dtype=float) for t in terms]
        self.sizes = [t.nlevels for t in terms]
        n, nterms = len(self.codes[0]), len(terms)
        # ancestor of each level of term j in term k > j, and the (k-levels x j-levels) indicator summing into it
        self.ancestor, self.children = {}, {}
        for j in range(nterms):
            up = np.arange(self.sizes[j])
            for k in range(j + 1, nterms):
                up = parents[k - 1][up]
                self.ancestor[j, k] = up
                order = np.argsort(up, kind="stable").astype(np.int64)  # term j's levels by ancestor
                indptr = np.searchsorted(up[order], np.arange(self.sizes[k] + 1)).astype(np.int64)
                self.children[j, k] = (indptr, order)
        # all terms' level sums of the rows' [X r] at once: rows of the stacked indicator are the terms'
        # levels, in Z's column order
        offsets = np.cumsum([0] + self.sizes[:-1])
        keys = np.concatenate([offsets[j] + self.codes[j] for j in range(nterms)])
        self._row_order = np.argsort(keys, kind="stable")
        self._indptr = np.searchsorted(keys[self._row_order], np.arange(sum(self.sizes) + 1)).astype(np.int64)
        self._indices = (self._row_order % n).astype(np.int64)
        self.n = n
        self.offsets = offsets

    @classmethod
    def of(cls, terms) -> NestedChain | None:
        """The chain of ``terms`` where there are at least two, all scalar, each nested in the next."""
        if len(terms) < 2 or any(t.k != 1 for t in terms):
            return None
        parents = [_parent(a.factor.codes, b.factor.codes, a.nlevels) for a, b in pairwise(terms)]
        return None if any(p is None for p in parents) else cls(terms, parents)

    def factor(self, theta: np.ndarray, w: np.ndarray, X: np.ndarray, response: np.ndarray) -> NestedFactor | None:
        """The factor of ``[ZΛ X r]'W[ZΛ X r] + diag(I, 0)`` at θ (one per term); None if not positive definite."""
        nterms = len(self.sizes)
        xy = np.column_stack([X, response]) if X.shape[1] else response[:, None]
        scaled = [w * self.z[j] * theta[j] for j in range(nterms)]  # w z_j λ_j per row
        diag = [np.bincount(self.codes[j], scaled[j] * self.z[j] * theta[j], minlength=self.sizes[j]) + 1.0
                for j in range(nterms)]
        couple = {(j, k): np.bincount(self.codes[j], scaled[j] * self.z[k] * theta[k], minlength=self.sizes[j])
                  for j in range(nterms) for k in range(j + 1, nterms)}
        data = np.concatenate(scaled)[self._row_order]
        sums = csr_times_dense(self._indptr, self._indices, data, (sum(self.sizes), self.n), xy)
        with_x = [sums[o : o + s] for o, s in zip(self.offsets, self.sizes)]
        tail = xy.T @ (w[:, None] * xy)
        d_all, below, below_x = [], {}, []
        for j in range(nterms):
            if not diag[j].min() > 0:  # (also False for NaN)
                return None
            d = np.sqrt(diag[j])
            lx = with_x[j] / d[:, None]
            lk = {k: couple[j, k] / d for k in range(j + 1, nterms)}
            for k in range(j + 1, nterms):
                up = self.ancestor[j, k]
                diag[k] -= np.bincount(up, lk[k] * lk[k], minlength=self.sizes[k])
                for k2 in range(k + 1, nterms):
                    couple[k, k2] -= np.bincount(up, lk[k] * lk[k2], minlength=self.sizes[k])
                if lx.shape[1] == 1:  # u alone: the response's column only
                    with_x[k] = with_x[k] - np.bincount(up, lk[k] * lx[:, 0], minlength=self.sizes[k])[:, None]
                else:
                    indptr, order = self.children[j, k]
                    shape = (self.sizes[k], self.sizes[j])
                    with_x[k] = with_x[k] - csr_times_dense(indptr, order, lk[k][order], shape, lx)
                below[j, k] = lk[k]
            tail -= lx.T @ lx
            d_all.append(d)
            below_x.append(lx)
        upper, info = dpotrf(tail.T, lower=0, clean=1)  # the symmetric block: its upper factor is L'
        if info != 0:
            return None
        return NestedFactor(d_all, below, below_x, np.ascontiguousarray(upper.T))

    # --- as ProfiledDeviance's, for PIRLS ------------------------------------------------

    def solve(self, f: NestedFactor) -> tuple[np.ndarray, np.ndarray]:
        """Fixed effects β and spherical random effects u (Z's column order): back substitution down the tree."""
        p = f.tail.shape[0] - 1
        beta = np.zeros(0)
        if p:
            beta, info = dtrtrs(f.tail[:p, :p], f.tail[p, :p], lower=1, trans=1)
            if info != 0:
                raise np.linalg.LinAlgError(f"singular triangular factor (LAPACK dtrtrs info {info})")
        u = [None] * len(f.d)
        for j in range(len(f.d) - 1, -1, -1):
            rhs = f.below_x[j][:, p] - f.below_x[j][:, :p] @ beta
            for k in range(j + 1, len(f.d)):
                rhs = rhs - f.below[j, k] * u[k][self.ancestor[j, k]]
            u[j] = rhs / f.d[j]
        return beta, np.concatenate(u)

    def fixef_covariance_unscaled(self, f: NestedFactor) -> np.ndarray:
        """``(X'V⁻¹X)⁻¹ / σ²``: inverse of R_X'R_X, R_X the X block of the [X r] factor."""
        p = f.tail.shape[0] - 1
        inv = la.solve_triangular(f.tail[:p, :p], np.eye(p), lower=True, check_finite=False)
        return inv.T @ inv


def _parent(codes: np.ndarray, parent_codes: np.ndarray, nlevels: int) -> np.ndarray | None:
    """Each level's level in the next term, or None unless every level has exactly one."""
    parent = np.full(nlevels, -1, dtype=np.int64)
    parent[codes] = parent_codes
    if np.any(parent < 0) or not np.array_equal(parent[codes], parent_codes):
        return None
    return parent
