"""``glmer`` on a Dask DataFrame and its result: the in-memory glmer's fit, the rows left on the cluster.

:func:`glmer` learns the model frame (:mod:`.frame`), fits by :mod:`.glmm` (PIRLS over
persisted partitions, ``engine.glmm``'s optimizer stages) and builds the result through
``results.builder.build_glmer`` as an in-memory fit.  :class:`DaskGlmerResult` answers
everything computed from θ, β, the modes and the reduced sums (summary, vcov, VarCorr,
ranef, condVar, profiles); fitted values, residuals and predictions are lazy Dask Series.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

from bayesmix.distributed import is_dask_collection
from bayesmix.distributed.frame import model_rows
from bayesmix.distributed.glmm import check_family, fit
from bayesmix.distributed.lmm import (
    ExactResidualQuantiles,
    _check_rows,
    _known_categories,
    _partition_predictions,
    _used_columns,
    model_spec,
)
from bayesmix.distributed.passes import compile_partition, learn_frame, tree_reduce
from bayesmix.engine.response import RESIDUAL_TYPES, residuals
from bayesmix.errors import ArgumentError
from bayesmix.results.builder import build_glmer
from bayesmix.results.glmer import GlmerResult
from bayesmix.results.predict import terms_in
from bayesmix.spec.terms import z_times


def glmer(formula: str, data, family, weights=None, offset=None, nAGQ: int = 1, *,
          data_name: str = "ddf") -> DaskGlmerResult:
    """``bayesmix.glmer`` for a ``dask.dataframe.DataFrame`` (``family`` a Family object)."""
    check_family(family)
    spec = model_spec(formula, data, weights, offset)
    data = _known_categories(data, _used_columns(spec, data))
    record, learn_seconds = learn_frame(data, spec)
    _check_rows(record)
    model, glmm_fit, keep, state, seconds = fit(spec, data, family, int(nAGQ), record, learn_seconds)
    # the rows' collection goes in before the builder's diagnostics, whose separation check makes a pass
    return build_glmer(model, family, glmm_fit, data_name=data_name,
                       result_class=partial(DaskGlmerResult, rows=(data, spec, state, keep, seconds)))


class DaskGlmerResult(ExactResidualQuantiles, GlmerResult):
    """A glmer fit to a Dask DataFrame: every statistic of an in-memory fit; row-wise values lazily."""

    def __init__(self, *args, rows, **kwargs):
        super().__init__(*args, **kwargs)
        ddf, spec, state, keep, pass_seconds = rows
        self.ddf = ddf  # the lazy collection, not its rows
        self._spec, self._state, self._keep = spec, state, keep
        # wall time of each kind of pass (seconds; "pirls" all PIRLS passes together) and how many
        # PIRLS passes the fit made ("pirls_passes"): the time per pass scales with rows per worker
        self.pass_seconds = pass_seconds

    def _rowwise(self, kind: str, **options):
        return self.ddf.map_partitions(
            _partition_values, self._spec, self._state, self._keep, self.family, self.beta_values, self.b,
            self.sigma, kind, options, meta=pd.Series(dtype=float, name=kind))

    def linear_predictor(self):
        """The linear predictor as a lazy ``dask.dataframe.Series`` (indexed as the model rows)."""
        return self._rowwise("link")

    def fitted(self):
        """Conditional fitted values (response scale) as a lazy ``dask.dataframe.Series``."""
        return self._rowwise("fitted")

    def residuals(self, type: str = "deviance", scaled: bool = False):
        """Residuals as a lazy ``dask.dataframe.Series``; ``type`` and ``scaled`` as for an in-memory fit."""
        if type not in RESIDUAL_TYPES:
            raise ArgumentError(f"unknown residual type {type!r}; use one of {', '.join(map(repr, RESIDUAL_TYPES))}")
        return self._rowwise("residuals", type=type, scaled=bool(scaled))

    @property
    def scaled_residuals(self):
        return self.residuals(type="pearson", scaled=True)

    @property
    def deviance(self) -> float:
        """The conditional deviance, Σ deviance residuals at the estimates, reduced in the fit's last pass."""
        return float(self.glmm_fit.state.sums.dev)

    def predict(self, newdata=None, re_form=None, type: str = "response"):
        """Predictions as lme4's: for the model rows or a Dask ``newdata`` a lazy ``dask.dataframe.Series``,
        for a pandas ``newdata`` an array; new rows are coded with the whole data's levels and ``scale()``."""
        if type not in ("response", "link"):
            raise ArgumentError(f"type must be 'response' or 'link', got {type!r}")
        if newdata is not None and is_dask_collection(newdata):
            return newdata.map_partitions(_partition_predictions, self, re_form, type, GlmerResult,
                                          meta=pd.Series(dtype=float, name="predict"))
        if newdata is not None:
            return super().predict(newdata, re_form=re_form, type=type)
        kind = "fitted" if type == "response" else "link"
        return self._rowwise(kind, keep_terms=sorted(terms_in(self.compiled.terms, re_form)))

    def extreme_fits(self, tol: float) -> tuple[int, int, np.ndarray]:
        """The separation check's numbers, from one pass over the partitions."""
        (count, nobs, contribution), _ = tree_reduce(self.ddf, _extreme_partition, _sum_extremes, self._spec,
                                                     self._state, self._keep, self.family, self.beta_values, self.b,
                                                     tol)
        return count, nobs, contribution



def _compiled_rows(df: pd.DataFrame, spec, state, family):
    rows, _ = model_rows(df, spec)
    if not len(rows):
        return rows, None
    return rows, compile_partition(rows, spec, state, binomial_response=family.response_is_probability)


def _eta(c, keep, beta, b, keep_terms=None) -> np.ndarray:
    return c.X[:, keep] @ beta + c.offset + z_times(c.terms, b, keep=None if keep_terms is None else set(keep_terms))


def _partition_values(df: pd.DataFrame, spec, state, keep, family, beta, b, sigma, kind, options) -> pd.Series:
    rows, c = _compiled_rows(df, spec, state, family)
    if c is None:
        return pd.Series(np.zeros(0), index=rows.index, name=kind)
    eta = _eta(c, keep, beta, b, options.get("keep_terms"))
    if kind == "link":
        return pd.Series(eta, index=rows.index, name=kind)
    mu = family.link.linkinv(eta)
    if kind == "residuals":
        mu = residuals(family, c.y, mu, eta, c.weights, options["type"])
        if options["scaled"]:
            mu = mu / sigma
    return pd.Series(mu, index=rows.index, name=kind)


def _extreme_partition(df: pd.DataFrame, spec, state, keep, family, beta, b, tol):
    rows, c = _compiled_rows(df, spec, state, family)
    if c is None:
        return 0, 0, np.zeros(len(beta))
    mu = family.link.linkinv(_eta(c, keep, beta, b))
    extreme = np.minimum(mu, 1.0 - mu) < tol
    contribution = np.abs(c.X[:, keep][extreme] * beta).max(axis=0) if extreme.any() else np.zeros(len(beta))
    return int(extreme.sum()), len(mu), contribution


def _sum_extremes(*parts):
    return (sum(p[0] for p in parts), sum(p[1] for p in parts), np.max([p[2] for p in parts], axis=0))
