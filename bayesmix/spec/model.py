"""Compile a formula and data into one mixed model: response, X, random-effects terms, weights, offset.

This is lme4's ``lFormula`` / ``glFormula`` stage: every check on the input happens
here, before any fitting, and rows with missing values are dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bayesmix.errors import DataWarning, warn
from bayesmix.spec import checks
from bayesmix.spec.design import (
    DataError,
    Evaluator,
    FrameState,
    as_factor,
    drop_rank_deficient,
    factor_of,
    is_categorical,
    model_matrix,
)
from bayesmix.spec.formula import ParsedFormula, cbind_arguments, parse_formula
from bayesmix.spec.rexpr import Name, Node, parse
from bayesmix.spec.termalgebra import expand_terms
from bayesmix.spec.terms import RandomEffectsTerm, order_terms


@dataclass
class CompiledModel:
    """Everything the estimation engines need, and what results need to explain themselves."""

    formula: ParsedFormula
    y: np.ndarray
    X: np.ndarray
    fixef_names: list[str]
    terms: list[RandomEffectsTerm]
    weights: np.ndarray  # prior weights (binomial: times the number of trials)
    offset: np.ndarray
    data: pd.DataFrame  # the rows used, original columns
    n_dropped: int = 0
    dropped_fixef: list[str] = field(default_factory=list)
    weights_name: str | None = None
    offset_name: str | None = None  # the offset= argument as lme4 prints it (formula offsets are not)
    response_trials: np.ndarray | None = None  # binomial: trials per row (cbind or weights)
    raw_weights: np.ndarray | None = None  # the prior weights as given (before trials)
    frame_state: FrameState = field(default_factory=FrameState)  # what rebuilds X and Z for new rows

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def p(self) -> int:
        return self.X.shape[1]

    @property
    def ntheta(self) -> int:
        return sum(t.ntheta for t in self.terms)

    def theta_start(self) -> np.ndarray:
        return np.concatenate([t.theta_start() for t in self.terms])

    def theta_lower(self) -> np.ndarray:
        return np.concatenate([t.theta_lower() for t in self.terms])

    def theta_names(self) -> list[str]:
        return [name for t in self.terms for name in t.theta_names()]



def compile_model(
    formula: str,
    data: pd.DataFrame,
    *,
    weights=None,
    offset=None,
    binomial_response: bool = False,
    check_levels_vs_nobs: bool = True,
    frame_state: FrameState | None = None,
) -> CompiledModel:
    """Parse, check and build the model's matrices (lme4's ``lFormula``).

    ``frame_state``: the model-frame state of a larger data set these rows are a piece of
    (bayesmix.distributed): factors get its levels and ``scale()`` its parameters, and no
    column is dropped for rank deficiency here, where only all rows can tell.
    """
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    if len(data) == 0:
        raise DataError("data has no rows")
    parsed = parse_formula(formula, columns=data.columns.tolist())
    data = checks.check_columns(data, checks.used_columns(data, formula, weights, offset))
    expressions = model_expressions(parsed, weights, offset)
    ev_all = Evaluator(data) if frame_state is None else Evaluator(data, state=frame_state, learning=False)
    # every name checked, scale() and poly() learned on all rows (as R), missing values found
    values = {node.deparse(): (node, ev_all.evaluate(node)) for node in expressions}

    weights_name = weights if isinstance(weights, str) else ("weights" if weights is not None else None)
    data, n_dropped = _drop_missing(values, data, ev_all, weights, offset)
    if len(data) == 0:
        raise DataError("no rows left after removing rows with missing values")
    # no row dropped: the same rows, so the values evaluated for the scan serve the matrices too
    ev = ev_all if n_dropped == 0 else Evaluator(data, state=ev_all.state, learning=frame_state is None)

    y, trials = _response(parsed.response, ev, binomial_response)
    prior = _prior_weights(weights, data, ev)
    offset_vec = _offset(parsed, ev, offset, data)

    fixed = model_matrix(parsed.fixed, ev)
    terms = order_terms([_random_term(spec, ev) for spec in parsed.random])
    made_nan = checks.nonfinite_rows(_evaluated_columns(parsed, y, trials, prior, offset_vec, fixed, terms))
    if made_nan is not None:  # NaN made past the model frame (e.g. by a contrast): drop those rows, start again
        return _without_rows(made_nan, formula, data, weights, offset, n_dropped,
                             binomial_response=binomial_response, check_levels_vs_nobs=check_levels_vs_nobs)
    checks.check_weights(prior)
    if frame_state is None:
        X, names, dropped = drop_rank_deficient(fixed.matrix, fixed.names)
    else:  # a partition of data fitted elsewhere (bayesmix.distributed): the columns the state fixed
        X, names, dropped = fixed.matrix, list(fixed.names), []
    check_terms(terms, len(y), check_levels_vs_nobs)

    return CompiledModel(
        formula=parsed,
        y=y,
        X=X,
        fixef_names=names,
        terms=terms,
        weights=prior if trials is None else prior * trials,
        offset=offset_vec,
        data=data,
        n_dropped=n_dropped,
        dropped_fixef=dropped,
        weights_name=weights_name,
        offset_name=offset if isinstance(offset, str) else ("offset" if offset is not None else None),
        response_trials=trials,
        raw_weights=prior,
        frame_state=ev.state,
    )


def _evaluated_columns(parsed, y, trials, prior, offset_vec, fixed, terms) -> dict:
    """What spec.checks.nonfinite_rows inspects, keyed by the names the user wrote."""
    named = {parsed.response: y, "weights": prior, "offset": offset_vec}
    if trials is not None:
        named[parsed.response] = np.column_stack([y, trials])
    named.update(zip(fixed.names, fixed.matrix.T))
    for t in terms:
        named.update({f"{name} (in ({t.expr} | {t.group}))": col for name, col in zip(t.column_names, t.columns.T)})
    return named


def _without_rows(drop, formula, data, weights, offset, n_dropped, **kwargs) -> CompiledModel:
    """compile_model again on the rows kept (arrays given for weights/offset cut to match)."""
    keep = ~drop
    extras = {}
    for name, given in (("weights", weights), ("offset", offset)):
        if given is None or isinstance(given, str):
            extras[name] = given
        else:
            extras[name] = np.asarray(data[f"({name})"] if f"({name})" in data else given, dtype=float)[keep]
    rows = data.loc[keep].drop(columns=[c for c in ("(weights)", "(offset)") if c in data]).reset_index(drop=True)
    compiled = compile_model(formula, rows, **extras, **kwargs)
    compiled.n_dropped += n_dropped + int(drop.sum())
    return compiled


def model_expressions(parsed: ParsedFormula, weights, offset) -> list[Node]:
    """Every expression the model frame evaluates: response, variables, offsets, groups, weights."""
    nodes = [parse(parsed.response)]
    for rhs in [parsed.fixed, *(t.expr for t in parsed.random)]:
        nodes += [v for term in expand_terms(rhs).terms for v in term]
    nodes += [parse(text) for text in [*parsed.offsets, *(t.group for t in parsed.random)]]
    nodes += [parse(extra) for extra in (weights, offset) if isinstance(extra, str)]
    return nodes


def _drop_missing(values: dict, data, ev, weights, offset) -> tuple[pd.DataFrame, int]:
    """R's ``na.omit`` on the model frame: rows missing a used column or an evaluated variable go."""
    used = list(dict.fromkeys(col for node, _ in values.values() for col in ev.referenced_columns(node)))
    column_missing = _missing_by_column(data, used)
    mask = ~column_missing.any(axis=1)
    counts = [f"{col}: {int(k)}" for col, k in zip(used, column_missing.sum(axis=0)) if k]
    for key, (node, value) in values.items():  # e.g. log(-1), or a value outside factor(x, levels =)
        gone = missing_rows(value) & mask
        if gone.any() and not isinstance(node, Name):
            counts.append(f"{key}: {int(gone.sum())}")
            mask &= ~gone
    for extra in (weights, offset):
        if extra is not None and not isinstance(extra, str):
            mask &= ~np.isnan(np.asarray(extra, dtype=float))
    n_dropped = int((~mask).sum())
    if n_dropped:
        where = ", ".join(counts)
        warn(f"{n_dropped} row{'s' if n_dropped > 1 else ''} with missing values removed"
             + (f" (missing in {where})" if where else ""), DataWarning)
        data = data.loc[mask]
        if weights is not None and not isinstance(weights, str):
            data = data.assign(**{"(weights)": np.asarray(weights, dtype=float)[mask]})
        if offset is not None and not isinstance(offset, str):
            data = data.assign(**{"(offset)": np.asarray(offset, dtype=float)[mask]})
    return data.reset_index(drop=True), n_dropped


def _missing_by_column(data: pd.DataFrame, used: list) -> np.ndarray:
    """(rows, len(used)) booleans: which cells of the used columns are missing."""
    columns = [data[col] for col in used]
    if not all(isinstance(c, pd.Series) for c in columns):  # a repeated label: checked and refused elsewhere
        return data[used].isna().to_numpy()
    if not columns:
        return np.zeros((len(data), 0), bool)
    # a column at a time: selecting the sub-frame copies it (a quarter of a millisecond on Pixel's 102 rows)
    return np.column_stack([c.isna().to_numpy() for c in columns])


def missing_rows(value) -> np.ndarray:
    if is_categorical(value) and not isinstance(value, np.ndarray):
        return np.asarray(value.codes) < 0
    arr = np.asarray(value)
    if arr.dtype == bool:
        return np.zeros(len(arr), bool)
    missing = np.isnan(arr.astype(float))
    return missing.any(axis=1) if missing.ndim == 2 else missing


def _response(text: str, ev: Evaluator, binomial: bool) -> tuple[np.ndarray, np.ndarray | None]:
    pair = cbind_arguments(text)
    if pair is not None:
        if not binomial:
            raise DataError("cbind(successes, failures) responses are for binomial glmer models")
        succ = _numeric(ev, pair[0], "the successes in the response")
        fail = _numeric(ev, pair[1], "the failures in the response")
        if np.any(succ < 0) or np.any(fail < 0):
            raise DataError(f"negative counts in the response {text}")
        trials = succ + fail
        with np.errstate(invalid="ignore", divide="ignore"):
            y = np.where(trials > 0, succ / np.where(trials > 0, trials, 1), 0.0)
        return y, trials
    values = ev.evaluate(text)
    if isinstance(values, np.ndarray) and values.dtype == bool:  # a logical response counts TRUE as 1, as R
        return values.astype(float), None
    if is_categorical(values):
        if not binomial:
            raise DataError(f"the response {text!r} is not numeric (it is categorical)")
        # a partition of data fitted elsewhere (bayesmix.distributed) codes by the whole data's levels
        factor = as_factor(values, text) if ev.learning else factor_of(values, text, ev)
        # R's binomial(): the first level is failure, every other level success.
        return (factor.codes != 0).astype(float), None
    try:
        y = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"the response {text!r} is not numeric") from exc
    if y.ndim != 1:
        raise DataError(f"the response {text!r} must be a single column")
    return y, None


def _numeric(ev: Evaluator, text: str, what: str) -> np.ndarray:
    values = ev.evaluate(text)
    if is_categorical(values) and not isinstance(values, np.ndarray):
        raise DataError(f"{what} {text!r} must be numeric, not categorical")
    values = np.asarray(values, dtype=float)
    if values.ndim != 1:
        raise DataError(f"{what} {text!r} must be a single column")
    return values


def _prior_weights(weights, data: pd.DataFrame, ev: Evaluator) -> np.ndarray:
    if weights is None:
        return np.ones(len(data))
    if isinstance(weights, str):  # a column or an expression, read by the formula evaluator
        values = ev.evaluate(weights)
        if is_categorical(values):
            raise DataError(f"weights {weights!r} must be numeric, not categorical")
        w = np.asarray(values, dtype=float)
    else:
        w = np.asarray(data.get("(weights)", weights), dtype=float)
    if w.shape != (len(data),):
        raise DataError(f"weights has {w.size} values for {len(data)} rows")
    if np.any(w < 0):
        raise DataError("negative weights are not allowed")
    return w


def _offset(parsed: ParsedFormula, ev: Evaluator, offset, data: pd.DataFrame) -> np.ndarray:
    total = np.zeros(len(data))
    for text in parsed.offsets:
        total = total + _numeric(ev, text, "the offset")
    if offset is not None:
        if isinstance(offset, str):
            total = total + _numeric(ev, offset, "the offset")
        else:
            values = data["(offset)"] if "(offset)" in data else offset
            values = np.asarray(values, dtype=float)
            if values.shape != (len(data),):
                raise DataError(f"offset has {values.size} values for {len(data)} rows")
            total = total + values
    return total


def grouping_factor(group: str, ev: Evaluator):
    """Evaluate a grouping factor (``a:b`` is the interaction, as R's ``:``) with the model frame's levels."""
    values = ev.evaluate(group)
    if not is_categorical(values) and np.ndim(values) != 1:
        raise DataError(f"the grouping factor {group!r} must be a single column")
    return factor_of(values, group, ev)


def _random_term(spec, ev: Evaluator) -> RandomEffectsTerm:
    factor = grouping_factor(spec.group, ev)
    lhs = model_matrix(spec.expr, ev)
    if lhs.matrix.shape[1] == 0:
        raise DataError(f"random term ({spec.expr} | {spec.group}) has no columns")
    return RandomEffectsTerm(spec.group, factor, lhs.matrix, tuple(lhs.names), spec.expr)


def check_terms(terms: list[RandomEffectsTerm], n: int, check_levels_vs_nobs: bool) -> None:
    for t in terms:
        if t.nlevels < 2:
            raise DataError(
                f"grouping factor {t.group!r} has a single level ({t.factor.levels[0]!r}); "
                "grouping factors must have more than one sampled level"
            )
        if check_levels_vs_nobs and t.nlevels >= n:
            raise DataError(
                f"number of levels of grouping factor {t.group!r} ({t.nlevels}) must be less than the "
                f"number of observations ({n}); the random effects and the residual variance are unidentifiable"
            )
        if check_levels_vs_nobs and t.q >= n:
            raise DataError(
                f"number of observations ({n}) <= number of random effects ({t.q}) for term "
                f"({t.expr} | {t.group}); the random-effects parameters and the residual variance are "
                "probably unidentifiable"
            )
