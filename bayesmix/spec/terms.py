"""Random-effects terms: grouping codes, the term's model matrix, and its relative covariance factor."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from bayesmix.spec.design import Factor


@dataclass(frozen=True)
class RandomEffectsTerm:
    """One ``(expr | group)`` term: ``b_g ~ N(0, sigma^2 T T')`` for each level g.

    ``T`` is the k x k lower-triangular relative covariance factor; its non-zero entries,
    column by column, are this term's slice of lme4's θ.  The term's columns of Z are
    level-major, as lme4 orders them: level 1's k columns, then level 2's, ...
    """

    group: str  # the grouping factor as lme4 names it, e.g. "Subject", "cask:batch"
    factor: Factor
    columns: np.ndarray  # n x k model matrix of the term's left-hand side
    column_names: tuple[str, ...]
    expr: str  # the term's left-hand side as written

    @property
    def k(self) -> int:
        return self.columns.shape[1]

    @property
    def nlevels(self) -> int:
        return self.factor.nlevels

    @property
    def q(self) -> int:
        return self.nlevels * self.k

    @property
    def ntheta(self) -> int:
        return self.k * (self.k + 1) // 2

    @cached_property
    def theta_rows_cols(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of each θ in T: lower triangle, column-major (lme4's order)."""
        cols, rows = np.triu_indices(self.k)  # transposed upper triangle = lower, column-major
        return rows, cols

    def theta_start(self) -> np.ndarray:
        rows, cols = self.theta_rows_cols
        return (rows == cols).astype(float)

    def theta_lower(self) -> np.ndarray:
        rows, cols = self.theta_rows_cols
        return np.where(rows == cols, 0.0, -np.inf)

    def theta_names(self) -> list[str]:
        rows, cols = self.theta_rows_cols
        names = []
        for r, c in zip(rows, cols):
            if r == c:
                names.append(f"{self.group}.{self.column_names[r]}")
            else:
                names.append(f"{self.group}.{self.column_names[r]}.{self.column_names[c]}")
        return names

    def factor_matrix(self, theta: np.ndarray) -> np.ndarray:
        """T(θ), the k x k lower-triangular relative covariance factor."""
        T = np.zeros((self.k, self.k))
        rows, cols = self.theta_rows_cols
        T[rows, cols] = theta
        return T

    def subset(self, rows: np.ndarray) -> RandomEffectsTerm:
        """This term on some of the observations, keeping every level (for chunked cross-products)."""
        factor = Factor(self.factor.codes[rows], self.factor.levels, self.factor.ordered)
        return RandomEffectsTerm(self.group, factor, self.columns[rows], self.column_names, self.expr)

    def indicator(self) -> sp.csr_matrix:
        """Sparse nlevels x n matrix that sums observations into their level."""
        n = len(self.factor.codes)
        return sp.csr_matrix((np.ones(n), (self.factor.codes, np.arange(n))), shape=(self.nlevels, n))

    def z_matrix(self) -> sp.csr_matrix:
        """This term's columns of Z (n x q), sparse, level-major."""
        n, k = self.columns.shape
        rows = np.repeat(np.arange(n), k)
        cols = (self.factor.codes[:, None] * k + np.arange(k)[None, :]).ravel()
        return sp.csr_matrix((self.columns.ravel(), (rows, cols)), shape=(n, self.q))

    def lambda_matrix(self, theta: np.ndarray) -> sp.csr_matrix:
        """This term's block of Λ(θ): nlevels copies of T on the diagonal."""
        return sp.kron(sp.identity(self.nlevels, format="csr"), sp.csr_matrix(self.factor_matrix(theta)), format="csr")


def order_terms(terms: list[RandomEffectsTerm]) -> list[RandomEffectsTerm]:
    """lme4's order: by decreasing number of levels, ties kept in formula order."""
    return sorted(terms, key=lambda t: -t.nlevels)


def b_from_u(terms, theta: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``b = Λ(θ) u``, term by term (u in Z's level-major column order)."""
    out, t0, u0 = [], 0, 0
    for term in terms:
        T = term.factor_matrix(theta[t0 : t0 + term.ntheta])
        out.append((u[u0 : u0 + term.q].reshape(term.nlevels, term.k) @ T.T).ravel())
        t0 += term.ntheta
        u0 += term.q
    return np.concatenate(out)


def theta_blocks(terms, theta: np.ndarray) -> list[np.ndarray]:
    """θ cut into each term's slice, in term order (the one place that knows the layout)."""
    bounds = np.cumsum([0] + [t.ntheta for t in terms])
    return [theta[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def effect_blocks(terms, b: np.ndarray) -> list[np.ndarray]:
    """A vector in Z's column order (b or u) as one (levels, k) array per term."""
    bounds = np.cumsum([0] + [t.q for t in terms])
    return [b[a:c].reshape(t.nlevels, t.k) for t, a, c in zip(terms, bounds[:-1], bounds[1:])]


def z_times(terms, b: np.ndarray, keep=None) -> np.ndarray:
    """``Z b`` without forming Z: each row's term columns times its level's effects.

    ``keep`` (a set of term indices) restricts the sum to those terms.
    """
    n = len(terms[0].factor.codes) if terms else 0
    out = np.zeros(n)
    for i, (term, block) in enumerate(zip(terms, effect_blocks(terms, b))):
        if keep is None or i in keep:
            out += np.einsum("ij,ij->i", term.columns, block[term.factor.codes])
    return out


def canonical_theta(terms, theta: np.ndarray) -> np.ndarray:
    """θ with every relative covariance factor's diagonal made non-negative, same covariance.

    ``T S (T S)' = T T'`` for a diagonal S of ±1: flipping the sign of a column of T
    (its diagonal entry and those below it) leaves the model unchanged.  lme4 keeps the
    diagonal ≥ 0; an unbounded search may end with any signs.
    """
    theta = np.array(theta, dtype=float)
    start = 0
    for term in terms:
        rows, cols = term.theta_rows_cols
        part = theta[start : start + term.ntheta]
        sign = np.where(part[rows == cols] < 0, -1.0, 1.0)  # one per column, in column order
        part *= sign[cols]
        start += term.ntheta
    return theta
