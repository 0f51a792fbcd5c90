"""``lmer`` on a Dask DataFrame: two passes over the partitions, the optimizer on the client.

Pass 1 learns the model-frame state (factor levels, ``scale()`` parameters, missing rows);
pass 2 sums the cross-products ``[Z X y]' W [Z X y]`` of every partition as a tree.  The
profiled (RE)ML deviance needs nothing else, so the optimizer, the estimates, the
standard errors and the conditional modes come from the reduced sums on the client,
through the same engine and result builder as an in-memory fit.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from bayesmix.distributed import is_dask_collection
from bayesmix.distributed.model import RowlessModel
from bayesmix.distributed.passes import (
    ModelSpec,
    compile_partition,
    cross_products,
    learn_frame,
    model_rows,
)
from bayesmix.distributed.quantiles import exact_quantiles
from bayesmix.engine.fit import fit_lmm
from bayesmix.engine.lmm import CrossProducts, ProfiledDeviance
from bayesmix.errors import ArgumentError, DataError, DataWarning, warn
from bayesmix.results.builder import build_lmer
from bayesmix.results.lmer import LmerResult
from bayesmix.results.predict import terms_in
from bayesmix.spec.design import Evaluator, FrameState, drop_rank_deficient
from bayesmix.spec.model import check_terms
from bayesmix.spec.terms import z_times


def lmer(formula: str, data, REML: bool = True, weights=None, offset=None, *, data_name: str = "ddf") -> DaskLmerResult:
    """``bayesmix.lmer`` for a ``dask.dataframe.DataFrame``: the same model, the rows left on the cluster."""
    spec = model_spec(formula, data, weights, offset)
    data = _known_categories(data, _used_columns(spec, data))
    record, learn_seconds = learn_frame(data, spec)
    _check_rows(record)
    state = record.state()
    sums, sums_seconds = cross_products(data, spec, state)
    model, cross, keep = rowless_model(spec, record, sums, state)
    deviance = ProfiledDeviance(model.terms, np.zeros((0, model.p)), None, None, reml=bool(REML), cross=cross)
    fit = fit_lmm(model, REML=bool(REML), deviance=deviance)
    result = build_lmer(model, fit, data_name=data_name, result_class=DaskLmerResult)
    result.attach(data, spec, state, keep, {"learn_frame": learn_seconds, "cross_products": sums_seconds})
    return result


def model_spec(formula: str, ddf, weights, offset) -> ModelSpec:
    """The formula and column-valued arguments each partition compiles, checked on the client."""
    if not isinstance(formula, str):
        raise ArgumentError(f"formula must be a string, got {type(formula).__name__}")
    for name, value in (("weights", weights), ("offset", offset)):
        if value is not None and not isinstance(value, str):
            raise ArgumentError(f"with a Dask DataFrame, {name}= must name a column (or be an expression of "
                                f"columns), not a {type(value).__name__}: an array cannot follow the partitions")
    spec = ModelSpec(formula, weights, offset, tuple(ddf.columns))
    spec.check()  # formula errors before any pass over the data
    return spec


def _used_columns(spec: ModelSpec, ddf) -> list:
    ev = Evaluator(ddf._meta)
    return list(dict.fromkeys(col for node in spec.expressions() for col in ev.referenced_columns(node)))


def _known_categories(ddf, used):
    """Categorical columns whose categories Dask does not know (each partition has its own, e.g.
    parquet files written apart) get the sorted union, as ``ddf.compute()`` gives them: levels
    follow category positions, so all partitions must share one list of categories."""
    unknown = [c for c in used if isinstance(ddf._meta[c].dtype, pd.CategoricalDtype) and not ddf[c].cat.known]
    for c in unknown:
        known = ddf[c].cat.as_known()  # one pass over this column
        ddf = ddf.assign(**{c: known.cat.set_categories(np.sort(known.cat.categories.to_numpy()))})
    return ddf


def _check_rows(record) -> None:
    if record.rows == 0:
        raise DataError("data has no rows")
    if record.dropped:
        where = ", ".join(f"{col}: {k}" for col, k in record.missing.items() if k)
        warn(f"{record.dropped} row{'s' if record.dropped > 1 else ''} with missing values removed"
             + (f" (missing in {where})" if where else ""), DataWarning)
    if record.dropped == record.rows:
        raise DataError("no rows left after removing rows with missing values")


def rowless_model(spec: ModelSpec, record, sums, state: FrameState) -> tuple[RowlessModel, CrossProducts, list[int]]:
    """The model's layout from the reduced sums; X's columns dropped for rank as a pandas fit drops them."""
    nobs = record.rows - record.dropped
    _, names, dropped = drop_rank_deficient(sums.r_x, sums.fixef_names)
    keep = [sums.fixef_names.index(n) for n in names]
    check_terms(sums.terms, nobs, True)
    model = RowlessModel(
        spec.parsed(), names, sums.terms, nobs=nobs, p=len(names), n_dropped=record.dropped,
        dropped_fixef=dropped, weights_name=spec.weights, offset_name=spec.offset, frame_state=state,
        row_moments=sums.moments.columns(keep))
    return model, _keep_columns(sums.cross, keep), keep


def _keep_columns(cp: CrossProducts, keep: list[int]) -> CrossProducts:
    """The cross-products of ``[X[:, keep] y]``: the rows and columns of X's kept columns, then y's."""
    rows = [*keep, cp.a_xx.shape[0] - 1]
    return CrossProducts(cp.a11, np.ascontiguousarray(cp.a_x1[rows]), cp.a_r1, cp.a_rr, cp.a_xr[rows],
                         cp.a_xx[np.ix_(rows, rows)], cp.n, cp.sum_log_weights)


# --- the result -----------------------------------------------------------------------------------


class ExactResidualQuantiles:
    """summary()'s scaled-residual quantiles of a Dask fit, exactly, from passes over the partitions."""

    def scaled_residual_quantiles(self) -> np.ndarray:
        """Min, quartiles and max of the scaled residuals, exactly, in two or three passes (no rows on the client)."""
        return self._residual_quantiles

    @cached_property
    def _residual_quantiles(self) -> np.ndarray:
        return exact_quantiles(self.scaled_residuals, [0, 0.25, 0.5, 0.75, 1])


class DaskLmerResult(ExactResidualQuantiles, LmerResult):
    """An lmer fit to a Dask DataFrame: every statistic of an in-memory fit; row-wise values lazily."""

    def attach(self, ddf, spec: ModelSpec, state: FrameState, keep: list[int], pass_seconds: dict) -> None:
        self.ddf = ddf  # the lazy collection, not its rows
        self._spec, self._state, self._keep = spec, state, keep
        self.pass_seconds = pass_seconds  # wall time of each pass over the data

    def _rowwise(self, kind: str, **options):
        return self.ddf.map_partitions(
            _partition_values, self._spec, self._state, self._keep, self.beta_values, self.b, self.sigma, kind,
            options, meta=pd.Series(dtype=float, name=kind))

    def fitted(self):
        """Conditional fitted values as a lazy ``dask.dataframe.Series`` (indexed as the model rows)."""
        return self._rowwise("fitted")

    def linear_predictor(self):
        return self._rowwise("fitted")

    def residuals(self, type: str = "response", scaled: bool = False):
        """Residuals as a lazy ``dask.dataframe.Series``; ``type`` and ``scaled`` as for an in-memory fit."""
        if type not in ("response", "working", "pearson", "deviance"):
            raise ArgumentError(f"unknown residual type {type!r}; use 'response', 'pearson', 'deviance' or 'working'")
        return self._rowwise("residuals", type=type, scaled=bool(scaled))

    @property
    def scaled_residuals(self):
        return self.residuals(type="pearson", scaled=True)

    def predict(self, newdata=None, re_form=None, type: str = "response"):
        """Predictions as lme4's: for the model rows or a Dask ``newdata`` a lazy ``dask.dataframe.Series``,
        for a pandas ``newdata`` an array; new rows are coded with the whole data's levels and ``scale()``."""
        if type not in ("response", "link"):
            raise ArgumentError(f"type must be 'response' or 'link', got {type!r}")
        if newdata is not None and is_dask_collection(newdata):  # new rows on the cluster: predicted there
            return newdata.map_partitions(_partition_predictions, self, re_form, type,
                                          meta=pd.Series(dtype=float, name="predict"))
        if newdata is not None:
            return super().predict(newdata, re_form=re_form, type=type)  # the model-frame state codes new rows
        return self._rowwise("fitted", keep_terms=sorted(terms_in(self.compiled.terms, re_form)))



def _partition_predictions(part: pd.DataFrame, fit, re_form, type, in_memory=LmerResult) -> pd.Series:
    """One partition's predictions by the in-memory fit class's ``predict`` (the Dask class's routes here)."""
    values = in_memory.predict(fit, part, re_form=re_form, type=type) if len(part) else np.zeros(0)
    return pd.Series(values, index=part.index, name="predict")


def _partition_values(df: pd.DataFrame, spec, state, keep, beta, b, sigma, kind, options) -> pd.Series:
    rows, _ = model_rows(df, spec)
    if not len(rows):
        return pd.Series(np.zeros(0), index=rows.index, name=kind)
    c = compile_partition(rows, spec, state)
    wanted = options.get("keep_terms")
    mu = c.X[:, keep] @ beta + c.offset + z_times(c.terms, b, keep=None if wanted is None else set(wanted))
    if kind == "residuals":
        mu = c.y - mu
        if options["type"] in ("pearson", "deviance"):
            mu = mu * np.sqrt(c.weights)
        if options["scaled"]:
            mu = mu / sigma
    return pd.Series(mu, index=rows.index, name=kind)
