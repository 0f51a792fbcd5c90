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
    "summary(ddf='Kenward-Roger'), anova_table, rlrt, pymc_model, and sample except an lmer fit's collapsed "
    "sampler (the default); fitted, residuals and predict() return lazy Dask collections instead"
)


def _merge_centred(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    """Chan et al.'s pairwise update of (count, mean, sum of centred outer products), for vectors."""
    n = n_a + n_b
    if n == 0:
        return n, mean_a, m2_a
    delta = mean_b - mean_a
    return n, mean_a + delta * n_b / n, m2_a + m2_b + np.outer(delta, delta) * n_a * n_b / n


@dataclass
class ColumnMoments:
    """Mean, centred cross-product and largest |value| of a matrix's columns (the Bayesian side's
    data-scaled default priors need each column's SD, and its size to tell a constant column)."""

    n: int
    mean: np.ndarray
    m2: np.ndarray
    absmax: np.ndarray

    @classmethod
    def of(cls, matrix: np.ndarray) -> ColumnMoments:
        mean = matrix.mean(axis=0) if len(matrix) else np.zeros(matrix.shape[1])
        centred = matrix - mean
        return cls(len(matrix), mean, centred.T @ centred, np.abs(matrix).max(axis=0, initial=0.0))

    def merge(self, other: ColumnMoments) -> ColumnMoments:
        n, mean, m2 = _merge_centred(self.n, self.mean, self.m2, other.n, other.mean, other.m2)
        return ColumnMoments(n, mean, m2, np.maximum(self.absmax, other.absmax))

    def sd(self) -> np.ndarray:
        """Each column's SD (n - 1), as ``np.std(ddof=1)``."""
        return np.sqrt(np.maximum(np.diag(self.m2), 0.0) / max(self.n - 1, 1))


@dataclass
class RowMoments:
    """Unweighted moments of the model rows that ICC and R² need (``results.icc_r2``): X's mean and
    centred cross-product (for var(Xβ)) and each term's ``Σ z_i z_i'`` (for the mean of z_i'Σz_i);
    and what the Bayesian side's default priors need: the moments of ``[y - offset, y]``, of X's
    and of each term's columns."""

    n: int
    x_mean: np.ndarray  # (p,)
    x_m2: np.ndarray  # (p, p): Σ (x_i - mean)(x_i - mean)'
    zz: list  # per term (k, k)
    x: ColumnMoments | None = None
    response: ColumnMoments | None = None  # columns y - offset, y, prior weights, weights × y
    z: list | None = None  # per term

    @classmethod
    def of(cls, X: np.ndarray, term_columns: list, y=None, offset=None, weights=None) -> RowMoments:
        x = ColumnMoments.of(X)
        response = None if y is None else ColumnMoments.of(np.column_stack([y - offset, y, weights, weights * y]))
        return cls(len(X), x.mean, x.m2, [z.T @ z for z in term_columns], x, response,
                   [ColumnMoments.of(z) for z in term_columns])

    def merge(self, other: RowMoments) -> RowMoments:
        """Chan et al.'s pairwise update, for vectors."""
        n, mean, m2 = _merge_centred(self.n, self.x_mean, self.x_m2, other.n, other.x_mean, other.x_m2)
        return RowMoments(n, mean, m2, [a + b for a, b in zip(self.zz, other.zz)],
                          _merged(self.x, other.x), _merged(self.response, other.response),
                          None if self.z is None or other.z is None else [a.merge(b) for a, b in zip(self.z, other.z)])

    def columns(self, keep: list[int]) -> RowMoments:
        x = None if self.x is None else ColumnMoments(self.x.n, self.x.mean[keep], self.x.m2[np.ix_(keep, keep)],
                                                       self.x.absmax[keep])
        return RowMoments(self.n, self.x_mean[keep], self.x_m2[np.ix_(keep, keep)], self.zz, x, self.response, self.z)

    def fixed_variance(self, beta: np.ndarray) -> np.ndarray:
        """``var(X β)`` over the rows (n - 1), for each row of ``beta`` (draws, p)."""
        return np.einsum("dp,pq,dq->d", beta, self.x_m2, beta) / (self.n - 1)

    def mean_quadratic(self, term: int, cov: np.ndarray) -> np.ndarray:
        """The mean over rows of ``z_i' Σ z_i`` for term ``term``, for each Σ in ``cov`` (draws, k, k)."""
        return np.einsum("kl,dkl->d", self.zz[term], cov) / self.n


def _merged(a, b):
    return None if a is None or b is None else a.merge(b)


class RowlessModel(CompiledModel):
    """``CompiledModel`` for a fit made from a Dask DataFrame: everything but the rows."""

    rowless = True  # inference checks by sufficient statistics and names instead of rows

    def __init__(self, formula, fixef_names, terms, *, nobs: int, p: int, n_dropped: int = 0, dropped_fixef=(),
                 weights_name=None, offset_name=None, frame_state=None, row_moments: RowMoments | None = None,
                 fitter: str = "lmer"):
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
        self.fitter = fitter  # "lmer" or "glmer": the call the rows message suggests

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
            f"bm.{self.fitter}(formula, ddf.compute()) or a sample, "
            f"bm.{self.fitter}(formula, ddf.sample(frac=0.1).compute())"
        )

    X = property(lambda self: self._rows("the model matrix X"))
    y = property(lambda self: self._rows("the response y"))
    data = property(lambda self: self._rows("the data"))
    weights = property(lambda self: self._rows("the prior weights"))
    raw_weights = property(lambda self: self._rows("the prior weights"))
    offset = property(lambda self: self._rows("the offset"))
