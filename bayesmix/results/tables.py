"""Tidy tables (broom.mixed's ``tidy()`` idiom), displayed rounded (``results.display.DisplayTable``).

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
from bayesmix.results.display import DisplayTable

EFFECTS = ("ran_vals", "fixed")


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
