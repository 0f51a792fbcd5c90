"""A compiled model without rows: the layout a fit and its result need, built from sufficient statistics.

:class:`RowlessModel` is a ``spec.model.CompiledModel`` whose terms keep their levels and
columns' names but hold zero rows, and whose row-valued fields (``X``, ``y``, ``data``,
``weights``, ``offset``) raise :class:`~bayesmix.errors.RowsRequiredError` naming the
methods that need the rows and how to get them.  Everything computed from θ, β, b and
the cross-products (summary, vcov, VarCorr, ranef, profiles) works unchanged on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bayesmix.errors import RowsRequiredError
from bayesmix.spec.model import CompiledModel

NEEDS_ROWS = (
    "methods that need the rows: simulate, refit, bootstrap, confint(method='boot'), pb_test, "
    "summary(ddf='Kenward-Roger'), anova_table, rlrt, pymc_model and sample; fitted, residuals and predict() return "
    "lazy Dask collections instead"
)


@dataclass
class RowMoments:
    """Unweighted moments of the model rows that ICC and R² need (``results.icc_r2``): X's mean and
    centred cross-product (for var(Xβ)) and each term's ``Σ z_i z_i'`` (for the mean of z_i'Σz_i)."""

    n: int
    x_mean: np.ndarray  # (p,)
    x_m2: np.ndarray  # (p, p): Σ (x_i - mean)(x_i - mean)'
    zz: list  # per term (k, k)

    @classmethod
    def of(cls, X: np.ndarray, term_columns: list) -> RowMoments:
        mean = X.mean(axis=0)
        centred = X - mean
        return cls(len(X), mean, centred.T @ centred, [z.T @ z for z in term_columns])

    def merge(self, other: RowMoments) -> RowMoments:
        """Chan et al.'s pairwise update, for vectors."""
        n = self.n + other.n
        delta = other.x_mean - self.x_mean
        return RowMoments(n, self.x_mean + delta * other.n / n,
                          self.x_m2 + other.x_m2 + np.outer(delta, delta) * self.n * other.n / n,
                          [a + b for a, b in zip(self.zz, other.zz)])

    def columns(self, keep: list[int]) -> RowMoments:
        return RowMoments(self.n, self.x_mean[keep], self.x_m2[np.ix_(keep, keep)], self.zz)

    def fixed_variance(self, beta: np.ndarray) -> np.ndarray:
        """``var(X β)`` over the rows (n - 1), for each row of ``beta`` (draws, p)."""
        return np.einsum("dp,pq,dq->d", beta, self.x_m2, beta) / (self.n - 1)

    def mean_quadratic(self, term: int, cov: np.ndarray) -> np.ndarray:
        """The mean over rows of ``z_i' Σ z_i`` for term ``term``, for each Σ in ``cov`` (draws, k, k)."""
        return np.einsum("kl,dkl->d", self.zz[term], cov) / self.n


class RowlessModel(CompiledModel):
    """``CompiledModel`` for a fit made from a Dask DataFrame: everything but the rows."""

    rowless = True  # inference checks by sufficient statistics and names instead of rows

    def __init__(self, formula, fixef_names, terms, *, nobs: int, p: int, n_dropped: int = 0, dropped_fixef=(),
                 weights_name=None, offset_name=None, frame_state=None, row_moments: RowMoments | None = None):
        self.formula = formula
        self.fixef_names = list(fixef_names)
        self.terms = list(terms)
        self._nobs = int(nobs)
        self._p = int(p)
        self.n_dropped = int(n_dropped)
        self.dropped_fixef = list(dropped_fixef)
        self.weights_name = weights_name
        self.offset_name = offset_name
        self.response_trials = None
        self.frame_state = frame_state  # the whole data's levels and scale() parameters: predict(newdata) uses them
        self.row_moments = row_moments  # what ICC and R² need from the rows

    @property
    def n(self) -> int:
        return self._nobs

    @property
    def p(self) -> int:
        return self._p

    # the dataclass's own repr and == would read the row fields
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return (f"<RowlessModel {self.formula.display}: {self.n} rows left on the cluster, "
                f"{self.p} fixed effects, {len(self.terms)} random-effects terms>")

    def _rows(self, what: str):
        raise RowsRequiredError(
            f"this fit was made from a Dask DataFrame and holds sufficient statistics, not the rows ({what} is "
            f"not here); {NEEDS_ROWS}. To use them, fit rows that fit in memory: "
            "bm.lmer(formula, ddf.compute()) or a sample, bm.lmer(formula, ddf.sample(frac=0.1).compute())"
        )

    X = property(lambda self: self._rows("the model matrix X"))
    y = property(lambda self: self._rows("the response y"))
    data = property(lambda self: self._rows("the data"))
    weights = property(lambda self: self._rows("the prior weights"))
    raw_weights = property(lambda self: self._rows("the prior weights"))
    offset = property(lambda self: self._rows("the offset"))
