"""A compiled model without rows: the layout a fit and its result need, built from sufficient statistics.

:class:`RowlessModel` is a ``spec.model.CompiledModel`` whose terms keep their levels and
columns' names but hold zero rows, and whose row-valued fields (``X``, ``y``, ``data``,
``weights``, ``offset``) raise :class:`~bayesmix.errors.RowsRequiredError` naming the
methods that need the rows and how to get them.  Everything computed from θ, β, b and
the cross-products (summary, vcov, VarCorr, ranef, profiles) works unchanged on it.
"""

from __future__ import annotations

from bayesmix.errors import RowsRequiredError
from bayesmix.spec.model import CompiledModel

NEEDS_ROWS = (
    "methods that need the rows: simulate, refit, bootstrap, confint(method='boot'), pb_test, "
    "summary(ddf=...), anova_table, rlrt, pymc_model and sample; fitted, residuals and predict() return "
    "lazy Dask collections instead"
)


class RowlessModel(CompiledModel):
    """``CompiledModel`` for a fit made from a Dask DataFrame: everything but the rows."""

    rowless = True  # inference checks by sufficient statistics and names instead of rows

    def __init__(self, formula, fixef_names, terms, *, nobs: int, p: int, n_dropped: int = 0, dropped_fixef=(),
                 weights_name=None, offset_name=None, frame_state=None):
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
