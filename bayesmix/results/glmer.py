"""Generalized linear mixed model fits (lme4's ``glmerMod``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import ndtr

from bayesmix.engine.response import residuals
from bayesmix.results.base import MixedModelResult
from bayesmix.results.display import DisplayTable
from bayesmix.results.varcorr import term_covariances


class GlmerResult(MixedModelResult):
    """A generalized linear mixed model fitted by Laplace or adaptive Gauss-Hermite quadrature (lme4's ``glmerMod``)."""

    is_lmm = False

    def __init__(self, *args, family=None, fit=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.family = family
        self.glmm_fit = fit

    @property
    def family_name(self) -> str:
        return self.family.name

    @property
    def link_name(self) -> str:
        return self.family.link.name

    @property
    def has_scale(self) -> bool:
        return bool(self.family.has_scale)

    @property
    def df(self) -> int:
        """``attr(logLik(m), "df")``: lme4 also counts the family's shape (the negative binomial's θ, even fixed)."""
        return super().df + self.family.extra_df

    def term_covariances(self) -> list[np.ndarray]:
        return term_covariances(self.compiled.terms, self.theta_values, self.sigma if self.has_scale else 1.0)

    @property
    def coef_table(self) -> pd.DataFrame:
        est, se = self.beta_values, np.sqrt(np.diag(self.vcov_values))
        stat = est / se
        label = "t value" if self.has_scale else "z value"
        return DisplayTable({"Estimate": est, "Std. Error": se, label: stat, "Pr(>|z|)": 2 * ndtr(-np.abs(stat))},
                            index=self.compiled.fixef_names)

    @property
    def deviance(self) -> float:
        """lme4's ``deviance()`` for a GLMM: the conditional deviance, the sum of squared deviance residuals."""
        return float(np.sum(self.residuals(type="deviance") ** 2))

    @property
    def vcov_source(self) -> str:
        """"hessian" (lme4's default, from the finite-difference Hessian in θ and β) or "RX"."""
        return self.glmm_fit.vcov_source

    def vcov_rx(self) -> pd.DataFrame:
        """The Cholesky-based covariance of β (lme4's ``vcov(m, use.hessian = FALSE)``)."""
        from bayesmix.engine.glmm import rx_vcov

        v = rx_vcov(self.glmm_fit.objective, self.glmm_fit.state) * (self.sigma**2 if self.has_scale else 1.0)
        return pd.DataFrame(v, index=self.compiled.fixef_names, columns=self.compiled.fixef_names)

    def ranef_condvar(self) -> dict[str, np.ndarray]:
        """Conditional variances of the random effects (lme4's ``condVar``) from the PIRLS factorization
        at the estimates; keyed by term, each (levels, k, k)."""
        from bayesmix.results.lmer import conditional_variances

        return conditional_variances(self.glmm_fit.state.factorization, self.compiled.terms, self.group_labels(),
                                     self.relative_factors(), self.sigma**2 if self.has_scale else 1.0)

    @property
    def response_family(self):
        return self.family

    def fitted(self) -> np.ndarray:
        return self.family.link.linkinv(self.linear_predictor())

    def extreme_fits(self, tol: float) -> tuple[int, int, np.ndarray]:
        """Rows whose fitted probability is within ``tol`` of 0 or 1 (separation): their number, the
        number of rows, and per fixed effect the largest ``|x_ij β_j|`` over them (zeros if none)."""
        mu = self.fitted()
        extreme = np.minimum(mu, 1.0 - mu) < tol
        if not extreme.any():
            return 0, len(mu), np.zeros(len(self.beta_values))
        return int(extreme.sum()), len(mu), np.abs(self.compiled.X[extreme] * self.beta_values).max(axis=0)

    def residuals(self, type: str = "deviance", scaled: bool = False) -> np.ndarray:
        """lme4's ``residuals(m, type)`` (deviance by default, as for glmerMod)."""
        r = residuals(self.family, self.compiled.y, self.fitted(), self.linear_predictor(), self.compiled.weights, type)
        return r / self.sigma if scaled else r
