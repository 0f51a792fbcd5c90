"""Tidy tables (broom.mixed's ``tidy()`` idiom) and a DataFrame that displays itself rounded.

``tidy(m, effects="ran_vals")`` is broom.mixed's one-row-per-level-and-term table of the random
effects: ``effect, group, level, term, estimate, std.error`` with the conditional modes and the
square roots of lme4's conditional variances (``condVar``, LMMs and GLMMs).  ``effects="fixed"`` gives the fixed effects.  With a
posterior (``bayesmix.bayes.compare.tidy_posterior``) the estimate is the posterior mean and
the std.error its SD.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesmix.errors import ArgumentError

EFFECTS = ("ran_vals", "fixed")


class DisplayTable(pd.DataFrame):
    """A DataFrame whose printed and notebook display is rounded (4 significant digits, R-hat to 3
    decimals, ESS whole); the values themselves keep full precision."""

    @property
    def _constructor(self):
        return DisplayTable

    def rounded(self) -> pd.DataFrame:
        """A plain DataFrame of the values as displayed."""
        out = pd.DataFrame(self).copy()
        for col, fmt in self._formats().items():
            out[col] = out[col].map(lambda x, f=fmt: float(f(x)) if np.isfinite(x) else x)
        return out

    def _formats(self) -> dict:
        formats = {}
        for col in self.columns:
            if pd.api.types.is_float_dtype(self[col]):
                name = str(col).lower()
                formats[col] = ("{:.0f}" if name.startswith("ess") else "{:.3f}" if name in ("r_hat", "rhat")
                                else "{:.4g}").format
        return formats

    def __repr__(self) -> str:
        return pd.DataFrame(self).to_string(formatters=self._formats())

    def _repr_html_(self) -> str:
        return pd.DataFrame(self).to_html(formatters=self._formats())


def check_effects(effects: str) -> None:
    if effects not in EFFECTS:
        raise ArgumentError(f"effects must be one of {', '.join(map(repr, EFFECTS))}, got {effects!r}")


def tidy(result, effects: str = "ran_vals") -> DisplayTable:
    """broom.mixed's ``tidy(m, effects=...)`` for a fit (see the module docstring)."""
    check_effects(effects)
    if effects == "fixed":
        se = np.sqrt(np.diag(result.vcov_values))
        return DisplayTable({"effect": "fixed", "term": list(result.compiled.fixef_names),
                             "estimate": result.beta_values, "std.error": se,
                             "statistic": result.beta_values / se})
    condvar = result.ranef_condvar()
    parts = []
    for label, term, block in zip(result.group_labels(), result.compiled.terms, _blocks(result)):
        se = np.sqrt(np.einsum("lkk->lk", condvar[label]))
        parts.append(ran_vals_frame(term.group, [str(v) for v in term.factor.levels], list(term.column_names),
                                    block, se))
    return DisplayTable(pd.concat(parts, ignore_index=True))


def ran_vals_frame(group: str, levels: list[str], columns: list[str], estimate: np.ndarray,
                   se: np.ndarray) -> pd.DataFrame:
    """One row per term and level, term by term (the order of R's ``as.data.frame(ranef(m))`` that
    broom.mixed keeps), from (levels, k) arrays."""
    n, k = estimate.shape
    return pd.DataFrame({"effect": "ran_vals", "group": group, "level": np.tile(levels, k),
                         "term": np.repeat(columns, n), "estimate": estimate.T.ravel(), "std.error": se.T.ravel()})


def _blocks(result):
    from bayesmix.spec.terms import effect_blocks

    return effect_blocks(result.compiled.terms, result.b)
