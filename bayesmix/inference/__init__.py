"""Inference beyond Wald: likelihood-ratio tests, profile intervals, parametric bootstrap, denominator df, exact RLRT.

Which test for which question (each function's docstring says when it is trustworthy):

* fixed effects of an LMM: F/t tests with Satterthwaite or Kenward-Roger df
  (``m.anova_table(ddf=...)``, ``m.summary(ddf=...)``), or :func:`pb_test` in small samples;
* nested models in general: the likelihood-ratio test :func:`anova` (asymptotic χ²),
  or its parametric-bootstrap calibration :func:`pb_test`;
* one variance component at zero: :func:`exact_rlrt` (the χ² LRT is conservative there);
* intervals: ``m.confint(method="profile")`` (default), ``"boot"``, or ``"Wald"`` (fixed effects only);
* are the group effects correlated with a covariate (econometrics' fixed vs random effects)?
  :func:`hausman` (within vs random-effects slopes), with :func:`within_estimator`,
  :func:`between_estimator` and :func:`with_group_means` (the Mundlak device).
"""

from bayesmix.inference._common import InferenceError
from bayesmix.inference.ddf import (
    anova_table,
    coef_table,
    contrast_f_test,
    contrast_t_test,
)
from bayesmix.inference.hausman import (
    HausmanResult,
    PanelEstimate,
    between_estimator,
    hausman,
    swamy_arora,
    with_group_means,
    within_estimator,
)
from bayesmix.inference.lrt import AnovaTable, anova
from bayesmix.inference.parametric_bootstrap import (
    BootResult,
    PBTestResult,
    bootstrap,
    pb_test,
    refit,
    simulate,
)
from bayesmix.inference.profiles import Profile, confint, profile
from bayesmix.inference.rlrt import RLRTResult, exact_rlrt

__all__ = [
    "AnovaTable",
    "BootResult",
    "HausmanResult",
    "InferenceError",
    "PanelEstimate",
    "PBTestResult",
    "Profile",
    "RLRTResult",
    "anova",
    "anova_table",
    "between_estimator",
    "bootstrap",
    "coef_table",
    "confint",
    "contrast_f_test",
    "contrast_t_test",
    "exact_rlrt",
    "hausman",
    "pb_test",
    "profile",
    "refit",
    "simulate",
    "swamy_arora",
    "with_group_means",
    "within_estimator",
]
