"""Predictions from a fit: which random-effects terms to use, and X and Z rebuilt for new rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesmix.errors import DataError
from bayesmix.spec import checks
from bayesmix.spec.design import Evaluator, is_categorical, model_matrix
from bayesmix.spec.formula import parse_formula
from bayesmix.spec.model import grouping_factor
from bayesmix.spec.terms import effect_blocks, z_times


def linear_predictor(result, newdata: pd.DataFrame | None = None, re_form=None) -> np.ndarray:
    """η for the training rows or ``newdata``, with the random-effects terms ``re_form`` selects."""
    wanted = terms_in(result.compiled.terms, re_form)
    c = result.compiled
    if newdata is None:
        return c.X @ result.beta_values + c.offset + z_times(c.terms, result.b, keep=wanted)
    return _predict_new(result, checks.check_newdata(newdata, c), wanted)


def terms_in(terms, re_form) -> set[int]:
    """lme4's ``re.form``: None uses every term, ``~0`` / ``NA`` none, a formula of random terms just those."""
    if re_form is None:
        return set(range(len(terms)))
    if isinstance(re_form, float) and np.isnan(re_form) or str(re_form).replace(" ", "") in ("~0", "NA", "0"):
        return set()
    text = str(re_form).strip()
    wanted = parse_formula("zzy " + text if text.startswith("~") else "zzy ~ " + text).random
    unknown = checks.unknown_re_form_terms(wanted, terms)
    if unknown:
        raise DataError(f"re_form names random-effects term(s) {', '.join(unknown)} the model does not have; "
                        f"its terms are {', '.join(f'({t.expr} | {t.group})' for t in terms)}")
    keys = {(w.expr.replace(" ", ""), w.group) for w in wanted}
    return {i for i, t in enumerate(terms) if (t.expr.replace(" ", ""), t.group) in keys}


def _predict_new(result, newdata: pd.DataFrame, wanted: set[int]) -> np.ndarray:
    """η for new rows, every variable evaluated with the training model-frame state."""
    X, offset, terms = new_rows(result.compiled, newdata, wanted)
    eta = X @ result.beta_values + offset
    for (z, rows, _), block in zip(terms, effect_blocks(result.compiled.terms, result.b)):
        if z is not None:  # unseen (or missing) levels: population prediction
            eta = eta + np.where(rows >= 0, np.einsum("ij,ij->i", z, block[np.maximum(rows, 0)]), 0.0)
    return eta


def new_rows(c, newdata: pd.DataFrame, wanted: set[int]):
    """X, the offset and, per random-effects term, (Z, level row, level label) of new rows.

    ``scale()`` and ``poly()`` use their training parameters and factors their training levels
    (R's ``makepredictcall`` and ``xlevels``), so the training rows get back the fitted values and
    new rows are coded as the training rows were.  A term ``wanted`` leaves out is (None, None, None);
    a row whose level the fit has not seen has level row -1 and its label (None when missing).
    """
    ev = Evaluator(newdata, state=c.frame_state)
    fixed = model_matrix(c.formula.fixed, ev)
    foreign = [name for name in fixed.names if name not in c.fixef_names and name not in c.dropped_fixef]
    if foreign:
        raise DataError(f"newdata gives fixed-effect columns the fit does not have: {', '.join(foreign)}")
    X = fixed.matrix[:, [fixed.names.index(name) for name in c.fixef_names]]
    offset = np.zeros(len(newdata))
    for text in c.formula.offsets:
        offset = offset + _numeric(ev.evaluate(text), text)
    terms = [_term_rows(term, ev) if idx in wanted else (None, None, None) for idx, term in enumerate(c.terms)]
    return X, offset, terms


def _term_rows(term, ev: Evaluator):
    """A term's Z for the new rows, each row's level among the fit's (-1: unseen or missing) and its label."""
    factor = grouping_factor(term.group, ev)
    codes = factor.codes  # -1: a missing grouping value
    labels = np.where(codes >= 0, np.asarray(factor.levels, dtype=object)[np.maximum(codes, 0)], None)
    position = {lvl: i for i, lvl in enumerate(term.factor.levels)}
    rows = np.array([position.get(lbl, -1) for lbl in labels], dtype=np.int64)
    return model_matrix(term.expr, ev).matrix, rows, labels


def _numeric(values, text: str) -> np.ndarray:
    if is_categorical(values):
        raise DataError(f"the offset {text!r} must be numeric, not categorical")
    return np.asarray(values, dtype=float)
