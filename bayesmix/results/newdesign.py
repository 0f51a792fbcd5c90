"""The design (X, offset, each term's Z and level rows) of the training rows or of new data, for
predictions that need more than η̂: posterior draws (bayesmix.bayes.predictive) and Wald or
simulated intervals (bayesmix.results.intervals).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesmix.errors import ArgumentError
from bayesmix.results.predict import new_rows, terms_in
from bayesmix.spec import checks


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
    """The design of ``newdata``, coded exactly as ``result.predict(newdata)`` codes it (the same
    ``results.predict.new_rows``).  Terms ``re_form`` leaves out get Z = 0."""
    if not isinstance(newdata, pd.DataFrame):
        raise ArgumentError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}")
    c = result.compiled
    X, offset, terms = new_rows(c, checks.check_newdata(newdata, c), terms_in(c.terms, re_form))
    n = len(newdata)
    z, rows, new_levels = [], [], []
    for term, (zt, rt, labels) in zip(c.terms, terms):
        if zt is None:
            zt, rt, labels = np.zeros((n, term.k)), np.zeros(n, dtype=np.int64), np.full(n, None, dtype=object)
        z.append(np.asarray(zt, dtype=float))
        rows.append(rt)
        new_levels.append(np.where(rt < 0, labels, None))  # None: a level the fit knows, or a missing one
    return Design(X, offset, z, rows, new_levels, newdata.index)
