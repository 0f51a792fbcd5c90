"""Fixed versus random effects as econometrics means them: within, between and random-effects estimators, Hausman test.

A random intercept per group assumes the group effects are uncorrelated with the covariates.
When they are not, the mixed model's (random-effects, GLS) slopes are biased, while the
within ("fixed-effects") estimator, which uses only the variation inside each group, is
not.  Under the assumption both are consistent and the random-effects one is efficient, so
their difference tests it (Hausman 1978):

    H = (b_W - b_RE)' [V(b_W) - V(b_RE)]⁻¹ (b_W - b_RE)  ~  χ²(k)

over the k covariates that vary within groups.  ``hausman(m)`` takes b_RE and V(b_RE) from
the fitted mixed model; ``random="swar"`` uses the Swamy–Arora random-effects estimator
instead, which reproduces R's ``plm::phtest(within, random)`` (checked in tests/test_hausman.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import chi2

from bayesmix.errors import ArgumentError, InferenceError


@dataclass
class PanelEstimate:
    """One estimator's coefficients, covariance matrix, residual variance and residual df."""

    name: str
    coef: pd.Series
    vcov: pd.DataFrame
    sigma2: float
    df_resid: int

    @property
    def se(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=self.coef.index, name="Std. Error")

    def table(self) -> pd.DataFrame:
        """Estimate, standard error and t value, as plm's ``summary(m)$coefficients`` (without p)."""
        return pd.DataFrame({"Estimate": self.coef, "Std. Error": self.se, "t value": self.coef / self.se})


@dataclass
class HausmanResult:
    """The Hausman test: χ² statistic, df, p-value, and the two estimators it compares."""

    statistic: float
    df: int
    p_value: float
    within: PanelEstimate
    random: PanelEstimate
    formula: str

    method = "Hausman Test"
    alternative = "one model is inconsistent"

    def __str__(self) -> str:
        p = "< 2.2e-16" if self.p_value < 2.2e-16 else f"= {self.p_value:.4g}"
        return (f"\n\t{self.method}\n\ndata:  {self.formula}\n"
                f"chisq = {self.statistic:.5g}, df = {self.df}, p-value {p}\n"
                f"alternative hypothesis: {self.alternative}\n")

    def __repr__(self) -> str:
        return str(self)

    def table(self) -> pd.DataFrame:
        """The slopes side by side: within, random effects, their difference and its SE."""
        diff = self.within.coef - self.random.coef
        var = np.diag(self.within.vcov.to_numpy() - self.random.vcov.to_numpy())
        return pd.DataFrame({"within": self.within.coef, self.random.name: self.random.coef, "difference": diff,
                             "SE of difference": np.sqrt(np.where(var > 0, var, np.nan))})


# --- the panel a fit was made from ------------------------------------------------------------


@dataclass
class _Panel:
    y: np.ndarray
    X: pd.DataFrame  # the fixed-effects model matrix, lme4's column names
    group: np.ndarray  # codes 0..G-1
    ngroups: int
    formula: str


def _panel(model) -> _Panel:
    """y, X and the one grouping factor of an unweighted LMM with a random intercept."""
    if not getattr(model, "is_lmm", False):
        raise InferenceError("the within / random-effects comparison is for linear mixed models (lmer fits); "
                             f"this is a {getattr(model, 'family_name', '?')} GLMM")
    compiled = model.compiled
    groups = {t.group for t in compiled.terms}
    if len(groups) != 1:
        raise InferenceError(f"the Hausman test needs one grouping factor (a panel); this model has {sorted(groups)}")
    if not np.allclose(compiled.weights, 1.0) or np.any(compiled.offset != 0):
        raise InferenceError("the Hausman test here is for unweighted fits without an offset")
    term = compiled.terms[0]
    X = pd.DataFrame(np.asarray(compiled.X, dtype=float), columns=list(compiled.fixef_names))
    return _Panel(np.asarray(compiled.y, dtype=float), X, np.asarray(term.factor.codes), term.nlevels,
                  model.formula_display)


def _group_means(values: np.ndarray, group: np.ndarray, ngroups: int) -> np.ndarray:
    values = values.reshape(len(group), -1)
    counts = np.bincount(group, minlength=ngroups).astype(float)
    sums = np.vstack([np.bincount(group, weights=values[:, j], minlength=ngroups) for j in range(values.shape[1])]).T
    return sums / counts[:, None]


def within_varying(model, tol: float = 1e-10) -> list[str]:
    """The fixed-effect columns that vary within groups (the ones a within estimator can identify)."""
    panel = _panel(model)
    X = panel.X.to_numpy()
    demeaned = X - _group_means(X, panel.group, panel.ngroups)[panel.group]
    scale = np.maximum(np.abs(X).max(axis=0), 1.0)
    return [name for name, s, d in zip(panel.X.columns, scale, np.abs(demeaned).max(axis=0)) if d > tol * s]


def _ols(y: np.ndarray, X: np.ndarray, names, label: str, df_resid: int) -> PanelEstimate:
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    if df_resid <= 0:
        raise InferenceError(f"the {label} estimator has no residual degrees of freedom ({df_resid})")
    sigma2 = float(resid @ resid) / df_resid
    vcov = sigma2 * np.linalg.inv(X.T @ X)
    return PanelEstimate(label, pd.Series(coef, index=names, name=label), pd.DataFrame(vcov, index=names, columns=names),
                         sigma2, df_resid)


def within_estimator(model) -> PanelEstimate:
    """The within ("fixed-effects") estimator: OLS of y on X after subtracting each group's means.

    Only the covariates that vary within groups are estimable; the residual df is
    ``n - G - k`` (the G group means are estimated too), as plm's ``model = "within"``.
    """
    panel = _panel(model)
    names = within_varying(model)
    if not names:
        raise InferenceError("no fixed-effect covariate varies within groups: the within estimator has nothing to estimate")
    X = panel.X[names].to_numpy()
    Xd = X - _group_means(X, panel.group, panel.ngroups)[panel.group]
    yd = panel.y - _group_means(panel.y, panel.group, panel.ngroups)[panel.group, 0]
    return _ols(yd, Xd, names, "within", len(panel.y) - panel.ngroups - len(names))


def between_estimator(model) -> PanelEstimate:
    """The between estimator: OLS of the group means of y on the group means of X (one row per group).

    Columns without variation between groups (apart from the intercept) drop out, as in plm's
    ``model = "between"``.
    """
    panel = _panel(model)
    Xm = _group_means(panel.X.to_numpy(), panel.group, panel.ngroups)
    ym = _group_means(panel.y, panel.group, panel.ngroups)[:, 0]
    keep = [j for j in range(Xm.shape[1]) if np.ptp(Xm[:, j]) > 1e-10 * max(1.0, np.abs(Xm[:, j]).max())
            or np.allclose(Xm[:, j], 1.0)]
    names = [panel.X.columns[j] for j in keep]
    return _ols(ym, Xm[:, keep], names, "between", panel.ngroups - len(keep))


def swamy_arora(model) -> PanelEstimate:
    """plm's default random-effects estimator (``random.method = "swar"``), for balanced panels.

    The variance components come from the within and between regressions (σ²_ε = within
    residual variance, σ²_1 = T · between residual variance), then OLS on quasi-demeaned data
    ``y - θ ȳ_i`` with ``θ = 1 - σ_ε / σ_1``.
    """
    panel = _panel(model)
    counts = np.bincount(panel.group, minlength=panel.ngroups)
    if np.any(counts != counts[0]):
        raise ArgumentError("random='swar' needs a balanced panel (every group the same size); "
                            "use random='model' (the mixed model's own estimates)")
    T = counts[0]
    sigma2_e = within_estimator(model).sigma2
    sigma2_1 = T * between_estimator(model).sigma2
    theta = 1.0 - np.sqrt(sigma2_e / sigma2_1) if sigma2_1 > sigma2_e else 0.0
    X = panel.X.to_numpy()
    Xs = X - theta * _group_means(X, panel.group, panel.ngroups)[panel.group]
    ys = panel.y - theta * _group_means(panel.y, panel.group, panel.ngroups)[panel.group, 0]
    return _ols(ys, Xs, list(panel.X.columns), "random (Swamy-Arora)", len(panel.y) - X.shape[1])


def _from_model(model) -> PanelEstimate:
    names = list(model.compiled.fixef_names)
    return PanelEstimate(f"mixed model ({model.method})", pd.Series(model.beta_values, index=names),
                         pd.DataFrame(model.vcov_values, index=names, columns=names), model.sigma ** 2,
                         int(model.df_resid))


def hausman(model, random: str = "model") -> HausmanResult:
    """Hausman's test of the random-effects assumption: within vs random-effects slopes.

    ``model``: an lmer fit with one grouping factor, e.g. ``lmer("y ~ x + (1 | id)", df)``.
    The within estimator is computed from the model's data; the random-effects estimate is
    the mixed model itself (``random="model"``, its REML or ML β̂ and ``vcov``) or the
    Swamy–Arora estimator (``random="swar"``, balanced panels; what R's ``plm::phtest``
    compares).  The test uses the covariates that vary within groups (k = df).

    A small p-value says the group effects are correlated with the covariates: the mixed
    model's slopes are biased; use the within estimator, or add the group means of the
    covariates as predictors (the Mundlak device), which makes the mixed model's slopes
    equal the within ones.  When V(b_W) − V(b_RE) is not positive definite the statistic can
    be negative or meaningless; the result then raises rather than report it.
    """
    if random not in ("model", "swar"):
        raise ArgumentError(f"random must be 'model' or 'swar', got {random!r}")
    within = within_estimator(model)
    full = _from_model(model) if random == "model" else swamy_arora(model)
    names = list(within.coef.index)
    re = PanelEstimate(full.name, full.coef[names], full.vcov.loc[names, names], full.sigma2, full.df_resid)
    diff = within.coef.to_numpy() - re.coef.to_numpy()
    dvcov = within.vcov.to_numpy() - re.vcov.to_numpy()
    try:
        stat = float(diff @ np.linalg.solve(dvcov, diff))
    except np.linalg.LinAlgError as exc:
        raise InferenceError("V(within) − V(random effects) is singular: the Hausman statistic is undefined") from exc
    if stat < -1e-8 * max(1.0, float(np.abs(diff).max())):
        raise InferenceError(f"the Hausman statistic is negative ({stat:.4g}): V(within) − V(random effects) is not "
                             "positive definite, so the test is not valid here")
    stat = max(stat, 0.0)
    k = len(names)
    return HausmanResult(stat, k, float(chi2.sf(stat, k)), within, re, panel_formula(model))


def with_group_means(data: pd.DataFrame, columns, group: str, suffix: str = "_mean") -> pd.DataFrame:
    """A copy of ``data`` with each column's group mean added as ``<column><suffix>`` (the Mundlak device).

    ``lmer("y ~ x + x_mean + (1 | g)", with_group_means(df, "x", "g"))``: the slope of ``x`` is
    then the within slope (exactly so in balanced panels), and that of ``x_mean`` is the
    between minus the within slope, whose test against zero is a Hausman-type test.
    """
    columns = [columns] if isinstance(columns, str) else list(columns)
    missing = [c for c in columns + [group] if c not in data.columns]
    if missing:
        raise ArgumentError(f"with_group_means: no column(s) {missing} in the data")
    out = data.copy()
    for c in columns:
        if not pd.api.types.is_numeric_dtype(out[c]):
            raise ArgumentError(f"with_group_means: column {c!r} is not numeric ({out[c].dtype})")
        out[c + suffix] = out.groupby(group, observed=True)[c].transform("mean")
    return out


def panel_formula(model) -> str:
    """The model's fixed part (``y ~ x``), as plm's data line shows it."""
    return model.formula_display.split("+ (")[0].strip()
