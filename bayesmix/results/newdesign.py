"""The design (X, offset, each term's Z and level rows) of the training rows or of new data, for
predictions that need more than η̂: posterior draws (bayesmix.bayes.predictive) and Wald or
simulated intervals (bayesmix.results.intervals).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesmix.errors import ArgumentError


class Design:
    """X, offset and, per random-effects term, its Z columns and level rows for a set of observations.

    ``rows[i] == -1`` marks an observation whose level the fit has not seen (or is missing);
    ``new_levels[i]`` names those levels (None where the level is missing).
    """

    def __init__(self, X, offset, z, rows, new_levels, index):
        self.X, self.offset, self.z, self.rows, self.new_levels, self.index = X, offset, z, rows, new_levels, index

    def is_new(self, term: int) -> np.ndarray:
        """Which rows hold a level of term ``term`` the fit has not seen (missing levels excluded)."""
        return np.array([level is not None for level in self.new_levels[term]], dtype=bool)


def training_design(result) -> Design:
    c = result.compiled
    z = [np.asarray(t.columns, dtype=float) for t in c.terms]
    rows = [np.asarray(t.factor.codes, dtype=np.int64) for t in c.terms]
    return Design(c.X, c.offset, z, rows, [np.full(c.n, None, dtype=object) for _ in c.terms], np.arange(c.n))


def new_design(result, newdata: pd.DataFrame, re_form=None) -> Design:
    """The design of ``newdata``, coded exactly as ``result.predict(newdata)`` codes it.

    η is linear in (β, b), so evaluating the fit's own prediction with unit coefficients recovers
    X and each term's Z and level of every new row: new data go through the one code path that
    codes factors, ``poly()``, ``scale()`` and offsets for ``m.predict``.  Terms ``re_form`` leaves
    out get Z = 0 (their grouping columns need not be in ``newdata``).
    """
    from types import SimpleNamespace

    from bayesmix.results.predict import linear_predictor, terms_in

    if not isinstance(newdata, pd.DataFrame):
        raise ArgumentError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}")
    c = result.compiled
    zero_b = np.zeros_like(result.b)

    wanted = terms_in(c.terms, re_form)

    def eta(beta, b, data=newdata, re_form=re_form):
        return np.asarray(linear_predictor(SimpleNamespace(compiled=c, beta_values=beta, b=b), data, re_form), float)

    offset = eta(np.zeros(c.p), zero_b, re_form="~0")
    X = np.column_stack([eta(e, zero_b, re_form="~0") - offset for e in np.eye(c.p)]) if c.p else np.zeros((len(newdata), 0))
    z, rows, new_levels, start = [], [], [], 0
    for i, term in enumerate(c.terms):
        block = slice(start, start + term.q)
        start += term.q
        if i not in wanted:
            z.append(np.zeros((len(newdata), term.k)))
            rows.append(np.zeros(len(newdata), dtype=np.int64))
            new_levels.append(np.full(len(newdata), None, dtype=object))
            continue
        zt, rt = _probe_term(term, block, zero_b, lambda b: eta(np.zeros(c.p), b) - offset)
        labels, unseen = _unseen_levels(term, newdata)
        if unseen.any():  # their Z, from the same rows given a level the fit knows
            substituted = newdata.copy()
            substituted[term.group] = pd.Series(np.where(unseen, term.factor.levels[0], substituted[term.group].astype(object)),
                                                index=newdata.index)
            zt[unseen] = _probe_term(term, block, zero_b,
                                     lambda b, data=substituted: eta(np.zeros(c.p), b, data) - offset)[0][unseen]
            rt[unseen] = -1
        z.append(zt)
        rows.append(rt)
        new_levels.append(np.where(unseen, labels, None))
    return Design(X, offset, z, rows, new_levels, newdata.index)


def _probe_term(term, block: slice, zero_b, contribution):
    """One term's Z and level rows: its effects set to 1 (→ Z) and to level number + 1 (→ Z · (row + 1))."""
    k, levels = term.k, term.nlevels
    cols, tags = [], []
    for j in range(k):
        ones, tagged = zero_b.copy(), zero_b.copy()
        part = np.zeros((levels, k))
        part[:, j] = 1.0
        ones[block] = part.ravel()
        part[:, j] = np.arange(1, levels + 1)
        tagged[block] = part.ravel()
        cols.append(contribution(ones))
        tags.append(contribution(tagged))
    z = np.column_stack(cols)
    tag = np.column_stack(tags)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(np.abs(z) > 0, tag / np.where(z == 0, 1.0, z), np.nan)
    row = np.max(np.where(np.isnan(ratio), -np.inf, ratio), axis=1)  # the same in every column with Z ≠ 0
    rows = np.where(np.isfinite(row), np.rint(row) - 1, 0).astype(np.int64)  # Z = 0: no contribution, any row
    return z, rows


def _unseen_levels(term, newdata: pd.DataFrame):
    """(labels, unseen): the grouping value of each new row and whether the fit lacks that level."""
    if term.group not in newdata.columns:
        if ":" in term.group or "/" in term.group:
            return np.full(len(newdata), None, dtype=object), np.zeros(len(newdata), dtype=bool)
        raise ArgumentError(f"newdata has no column {term.group!r}, the grouping factor of ({term.expr} | {term.group}); "
                            "add it, or leave the term out with re_form")
    values = newdata[term.group].astype(object)
    labels = np.array([None if pd.isna(v) else str(v) for v in values], dtype=object)
    known = {str(v) for v in term.factor.levels}
    unseen = np.array([lbl is not None and lbl not in known for lbl in labels])
    return labels, unseen
