"""Variance components from θ: one computation of covariances, SDs and correlations for every caller."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesmix.spec.terms import theta_blocks


def term_covariances(terms, theta: np.ndarray, scale: float = 1.0) -> list[np.ndarray]:
    """Σ for each random-effects term: ``scale² T T'``."""
    return [scale**2 * (T @ T.T) for T in (t.factor_matrix(th) for t, th in zip(terms, theta_blocks(terms, theta)))]


def sd_and_corr(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SDs and the correlation matrix of a covariance matrix.

    A correlation involving a zero SD is undefined: NaN, as lme4's ``VarCorr`` reports it.
    """
    sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(sd, sd)
    corr[np.outer(sd, sd) == 0] = np.nan
    np.fill_diagonal(corr, np.where(sd > 0, 1.0, np.nan))
    return sd, corr


def sdcor_from_theta(terms, theta: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """SDs and correlations in θ's layout (lme4's profile parameters).

    An undefined correlation (a zero SD) is 0 here: profiles and bootstraps need a number,
    and the correlation of a degenerate term has no effect on the model.
    """
    out = []
    for term, cov in zip(terms, term_covariances(terms, theta, scale)):
        sd, corr = sd_and_corr(cov)
        rows, cols = term.theta_rows_cols
        out.extend(sd[r] if r == c else (0.0 if np.isnan(corr[r, c]) else corr[r, c]) for r, c in zip(rows, cols))
    return np.array(out, dtype=float)


def sdcor_names(terms, has_scale: bool) -> list[str]:
    """lme4's profile names (``oldNames = FALSE``): ``sd_(Intercept)|Subject``, ``cor_Days.(Intercept)|Subject``, ``sigma``."""
    names = []
    for term in terms:  # lme4 names the grouping factor without make.unique's ".1"
        rows, cols = term.theta_rows_cols
        for r, c in zip(rows, cols):
            if r == c:
                names.append(f"sd_{term.column_names[r]}|{term.group}")
            else:
                names.append(f"cor_{term.column_names[r]}.{term.column_names[c]}|{term.group}")
    if has_scale:
        names.append("sigma")
    return names


def group_labels(terms) -> list[str]:
    """Group names made unique as R's ``make.unique`` does (``Subject``, ``Subject.1``)."""
    seen: dict[str, int] = {}
    out = []
    for t in terms:
        count = seen.get(t.group, 0)
        out.append(t.group if count == 0 else f"{t.group}.{count}")
        seen[t.group] = count + 1
    return out


def varcorr_frame(terms, covariances, residual_sd: float | None) -> pd.DataFrame:
    """lme4's ``as.data.frame(VarCorr(m))``: variances, then covariances, per term, then the residual."""
    rows = []
    for group, term, cov in zip(group_labels(terms), terms, covariances):
        sd, corr = sd_and_corr(cov)
        names = term.column_names
        rows += [(group, names[i], "", cov[i, i], sd[i]) for i in range(term.k)]
        rows += [(group, names[i], names[j], cov[i, j], corr[i, j]) for i in range(term.k) for j in range(i + 1, term.k)]
    if residual_sd is not None:
        rows.append(("Residual", "", "", residual_sd**2, residual_sd))
    return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])
