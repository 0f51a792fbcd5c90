"""The model-frame state of a data set split into partitions: factor levels, ``scale()``, missing rows.

A pandas fit learns its ``spec.reval.FrameState`` from all rows at once: a factor's levels
are those of R's ``factor()`` over the rows used (categories in their order, numbers and
strings sorted, unused levels dropped), ``scale()`` centres and scales by the mean and the
n-1 SD of all rows.  Both are functions of little: the levels of an expression only of the
*distinct* combinations of the columns it reads, ``scale()`` only of a count, a mean and a
sum of squared deviations.  So each partition reports those (:func:`learn_partition`),
the reports are merged as a tree (:meth:`FrameRecord.merge`), and the client evaluates
every factor once on the merged distinct rows (:meth:`FrameRecord.state`): the levels a
pandas fit of all the rows would have, in its order.  ``poly()``, whose coefficients need
the whole column, is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bayesmix.errors import ArgumentError
from bayesmix.spec.design import Evaluator, FrameState, as_factor, is_categorical
from bayesmix.spec.formula import parse_formula
from bayesmix.spec.model import missing_rows, model_expressions
from bayesmix.spec.rexpr import Call, Literal, Name, Node, parse
from bayesmix.spec.rfuncs import FUNCTIONS, bind_arguments

REFUSED = {"poly": "poly() needs its coefficients from the whole column at once"}


@dataclass(frozen=True)
class ModelSpec:
    """What every partition compiles: the formula and the column-valued arguments, no data."""

    formula: str
    weights: str | None
    offset: str | None
    columns: tuple = ()  # the data's columns, for a formula's '.'

    def parsed(self):
        return parse_formula(self.formula, columns=list(self.columns))

    def expressions(self) -> list[Node]:
        """Every expression the model frame evaluates (as ``spec.model.compile_model`` lists them)."""
        return model_expressions(self.parsed(), self.weights, self.offset)

    def check(self) -> None:
        for node in self.expressions():
            for sub in node.walk():
                if isinstance(sub, Call) and sub.func in REFUSED:
                    raise ArgumentError(f"{sub.deparse()} is not available on a Dask DataFrame: "
                                        f"{REFUSED[sub.func]}; fit in memory, or use the column as it is")


@dataclass
class FrameRecord:
    """What the model frame needs from some rows."""

    distinct: dict = field(default_factory=dict)  # factor expression -> distinct rows of the columns it reads
    moments: dict = field(default_factory=dict)  # scale() call -> (count, mean, sum of squared deviations)
    transforms: dict = field(default_factory=dict)  # scale() call -> one partition's own parameters
    missing: dict = field(default_factory=dict)  # column or expression -> rows it removes (model order)
    rows: int = 0
    dropped: int = 0

    def merge(self, other: FrameRecord) -> FrameRecord:
        distinct = dict(self.distinct)
        for key, frame in other.distinct.items():
            distinct[key] = frame if key not in distinct else \
                pd.concat([distinct[key], frame], ignore_index=True).drop_duplicates(ignore_index=True)
        moments = dict(self.moments)
        for key, m in other.moments.items():
            moments[key] = m if key not in moments else _merge_moments(moments[key], m)
        missing = dict(self.missing)
        for key, k in other.missing.items():
            missing[key] = missing.get(key, 0) + k
        return FrameRecord(distinct, moments, {**other.transforms, **self.transforms}, missing,
                           self.rows + other.rows, self.dropped + other.dropped)

    def state(self) -> FrameState:
        """The whole data's model-frame state: each factor evaluated once on its distinct rows."""
        state = FrameState()
        for key, frame in self.distinct.items():
            factor = as_factor(Evaluator(frame).evaluate(key), key)
            state.set_levels(key, factor.levels, factor.ordered)
        for key, params in self.transforms.items():
            state.transforms[key] = _scale_parameters(key, params, self.moments[key])
        return state


def _merge_moments(a, b):
    """Chan et al.'s pairwise update of (count, mean, sum of squared deviations)."""
    n_a, mean_a, m2_a = a
    n_b, mean_b, m2_b = b
    n = n_a + n_b
    if n == 0:
        return a
    delta = mean_b - mean_a
    return n, mean_a + delta * n_b / n, m2_a + m2_b + delta * delta * n_a * n_b / n


def _scale_parameters(key: str, local: dict, moments) -> dict:
    """``scale()``'s centre and scale over all rows, as ``spec.rfuncs._scale`` computes them on one frame."""
    node = parse(key)
    positional, named = bind_arguments("scale", FUNCTIONS["scale"], [(a.name, a.value) for a in node.args])
    given = dict(zip(("x", "center", "scale"), positional)) | named
    n, mean, m2 = moments
    center = mean if _is_true(given.get("center")) else local["center"]  # FALSE or a number: the same everywhere
    if not _is_true(given.get("scale")):
        return {"center": center, "scale": local["scale"]}
    shift = 0.0 if center is None else center
    squares = m2 + n * (mean - shift) ** 2  # sum of (x - shift)² from the moments about the mean
    return {"center": center, "scale": float(np.sqrt(squares / max(1, n - 1)))}


def _is_true(node) -> bool:
    """An argument left at its default TRUE, or written TRUE / T."""
    return node is None or isinstance(node, Literal) and node.value is True or \
        isinstance(node, Name) and node.name == "T"


# --- one partition -----------------------------------------------------------------------------


def model_rows(df: pd.DataFrame, spec: ModelSpec) -> tuple[pd.DataFrame, dict]:
    """The rows the model uses (lme4's na.omit, as ``spec.model`` drops them) and what each column removed."""
    ev = Evaluator(df)
    values = {node.deparse(): (node, ev.evaluate(node)) for node in spec.expressions()}
    used = list(dict.fromkeys(col for node, _ in values.values() for col in ev.referenced_columns(node)))
    column_missing = df[used].isna().to_numpy() if used else np.zeros((len(df), 0), bool)
    mask = ~column_missing.any(axis=1)
    missing = {str(col): int(k) for col, k in zip(used, column_missing.sum(axis=0))}
    for key, (node, value) in values.items():
        gone = missing_rows(value) & mask
        if not isinstance(node, Name):
            missing[key] = missing.get(key, 0) + int(gone.sum())
            mask &= ~gone
    return df.loc[mask], missing


def learn_partition(df: pd.DataFrame, spec: ModelSpec) -> FrameRecord:
    """Pass 1 on one partition: distinct rows per factor, ``scale()`` moments, missing rows."""
    rows, missing = model_rows(df, spec)
    record = FrameRecord(missing=missing, rows=len(df), dropped=len(df) - len(rows))
    ev_all = Evaluator(df)
    for node in spec.expressions():
        _record_scales(node, ev_all, record)
    if not len(rows):
        return record
    ev = Evaluator(rows)
    groups = {parse(t.group).deparse() for t in spec.parsed().random}  # factors whatever their values
    for node in spec.expressions():
        value = ev.evaluate(node)
        factor = is_categorical(value) or node.deparse() in groups
        keys = [*ev.state.levels] + ([node.deparse()] if factor else [])
        for key in keys:
            if key not in record.distinct:
                columns = ev.referenced_columns(key)
                record.distinct[key] = rows[columns].drop_duplicates(ignore_index=True)
    return record


def _record_scales(node: Node, ev: Evaluator, record: FrameRecord) -> None:
    """Moments of every ``scale()`` argument over all rows (R scales before rows are dropped)."""
    for sub in node.walk():
        if isinstance(sub, Call) and sub.func == "scale" and sub.deparse() not in record.moments:
            key = sub.deparse()
            ev.evaluate(sub)  # this partition's own parameters, for the arguments that are not data
            record.transforms[key] = ev.state.transforms[key]
            positional, named = bind_arguments("scale", FUNCTIONS["scale"], [(a.name, a.value) for a in sub.args])
            x = np.asarray(ev.evaluate(positional[0] if positional else named["x"]), dtype=float)
            x = x[~np.isnan(x)]
            mean = float(x.mean()) if len(x) else 0.0
            record.moments[key] = (len(x), mean, float(((x - mean) ** 2).sum()))
