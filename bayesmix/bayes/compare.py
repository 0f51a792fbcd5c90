"""The frequentist estimates and the posterior side by side (``bm.compare``)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from bayesmix.bayes.pymc_model import (
    term_infos,
)
from bayesmix.bayes.sampling import check_posterior_belongs, summary_var_names
from bayesmix.errors import ArgumentError
from bayesmix.results.display import DisplayTable
from bayesmix.results.tables import check_effects, ran_vals_frame

# --- frequentist and Bayesian side by side ------------------------------------------------------


def _check_levels(**levels) -> None:
    for name, value in levels.items():
        if isinstance(value, bool) or not isinstance(value, float | int | np.floating) or not 0 < value < 1:
            raise ArgumentError(f"{name} must be a probability strictly between 0 and 1, got {value!r}")


def compare(result, posterior, ci_prob: float = 0.94, wald_level: float = 0.95) -> pd.DataFrame:
    """Per parameter: the ML/REML (or Laplace) estimate, its SE and Wald interval (fixed effects),
    the posterior mean, SD, HDI, R-hat and bulk ESS.

    A :class:`~bayesmix.results.display.DisplayTable`: it shows 4 significant digits, its
    numbers keep all of theirs."""
    import arviz_stats as azs
    from scipy.stats import norm

    _check_levels(ci_prob=ci_prob, wald_level=wald_level)
    if not hasattr(posterior, "__getitem__") or not hasattr(posterior, "children") or "posterior" not in posterior.children:
        raise ArgumentError(f"expected the posterior returned by sample() (an xarray DataTree with a 'posterior' "
                            f"group), got {type(posterior).__name__}")
    names = summary_var_names(result)
    missing = [n for n in names if n not in posterior["posterior"]]
    if missing:
        raise ValueError(f"the posterior has no {', '.join(missing)}: was it sampled from this model?")
    check_posterior_belongs(result, posterior)  # the same names, but another model or other data?
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        summ = azs.summary(posterior, var_names=names, ci_prob=ci_prob, ci_kind="hdi", round_to="none")
    pct = f"{100 * ci_prob:g}"
    lo, hi = [c for c in summ.columns if c.startswith("hdi")][:2]
    freq = frequentist_table(result)
    z = norm.ppf(0.5 + wald_level / 2)
    table = DisplayTable({
        "kind": freq["kind"],
        "estimate": freq["estimate"],
        "se": freq["se"],
        f"wald_{100 * (1 - wald_level) / 2:g}%": freq["estimate"] - z * freq["se"],
        f"wald_{100 * (1 + wald_level) / 2:g}%": freq["estimate"] + z * freq["se"],
        "mean": summ["mean"].reindex(freq.index),
        "sd": summ["sd"].reindex(freq.index),
        f"hdi{pct}_lower": summ[lo].reindex(freq.index),
        f"hdi{pct}_upper": summ[hi].reindex(freq.index),
        "r_hat": summ["r_hat"].reindex(freq.index),
        "ess_bulk": summ["ess_bulk"].reindex(freq.index),
    }, index=freq.index)
    table.index.name = "parameter"
    table.attrs["estimate"] = result.method
    table.attrs["priors"] = posterior["posterior"].attrs.get("priors", "")
    return table


def frequentist_table(result) -> pd.DataFrame:
    """The fit's estimates under the posterior's parameter names (SEs for fixed effects only)."""
    rows = [(f"beta[{n}]", "fixed", e, s) for n, e, s in zip(result.compiled.fixef_names, result.beta_values, result.se)]
    for info, cov in zip(term_infos(result), result.term_covariances()):
        sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
        rows += [(f"sd_{info.label}[{c}]", "sd", s, np.nan) for c, s in zip(info.columns, sd)]
        for pair, (i, j) in zip(info.pairs, zip(*np.triu_indices(info.k, 1))):
            corr = cov[i, j] / (sd[i] * sd[j]) if sd[i] > 0 and sd[j] > 0 else np.nan
            rows.append((f"corr_{info.label}[{pair}]", "corr", corr, np.nan))
    if result.has_scale:
        rows.append(("sigma", "sigma", result.sigma, np.nan))
    rows += [(name, "family", value, np.nan) for name, value in result.response_family.parameter_estimates().items()]
    frame = pd.DataFrame(rows, columns=["parameter", "kind", "estimate", "se"]).set_index("parameter")
    return frame


def tidy_posterior(result, posterior, effects: str = "ran_vals") -> DisplayTable:
    """broom.mixed's ``tidy()`` of a posterior: estimate = posterior mean, std.error = posterior SD."""
    check_effects(effects)
    p = posterior["posterior"]
    if effects == "fixed":
        beta = p["beta"]
        return DisplayTable({"effect": "fixed", "term": list(result.compiled.fixef_names),
                             "estimate": beta.mean(("chain", "draw")).values,
                             "std.error": beta.std(("chain", "draw")).values})
    parts = []
    for info in term_infos(result):
        b = p[f"b_{info.label}"]
        parts.append(ran_vals_frame(info.group, info.levels, info.columns, b.mean(("chain", "draw")).values,
                                    b.std(("chain", "draw")).values))
    return DisplayTable(pd.concat(parts, ignore_index=True))
