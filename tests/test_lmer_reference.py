"""lmer against lme4: every LMM case (shared corpus + extra features) at the team's LMM tolerances.

Fixed effects within 1e-3 of lme4's SE; SEs, random-effect SDs and sigma within 2e-3
relative; the REML/ML criterion no worse than lme4's.  Derived numbers get tolerances
propagated from those (conftest.py explains each).  Each model is fitted once.
"""

from __future__ import annotations

import numpy as np
import pytest

import bayesmix as bm
from bayesmix.engine.lmm import ProfiledDeviance
from conftest import (
    LMM,
    assert_criterion_not_worse,
    cached_fit,
    check_fitted_head,
    check_fixef,
    check_ranef,
    check_scaled_residual_quantiles,
    check_sigma,
    check_statistics_follow_criterion,
    check_structure,
    check_theta,
    check_varcorr,
    check_vcov,
    corpus_case_ids,
    extra_case_ids,
)

# The extra cases (weights, offset, factor slopes, ...) get the same comparisons as the
# corpus; test_lmer_features.py checks what each feature must do besides.
CASES = corpus_case_ids("lmm") + extra_case_ids("lmm")


@pytest.fixture(params=CASES)
def fitted(request):
    return cached_fit(request.param)


def test_every_lmm_case_of_the_corpus_is_covered():
    assert corpus_case_ids("lmm") == [
        "cake_interaction", "dyestuff2_singular", "dyestuff_ml", "dyestuff_reml", "instEval_crossed_ml",
        "pastes_nested", "penicillin_crossed", "sleepstudy_doublebar_ml", "sleepstudy_intercept_reml",
        "sleepstudy_slope_ml", "sleepstudy_slope_reml", "sleepstudy_uncorr_reml",
    ]


def test_method_and_names(fitted):
    m, case = fitted.model, fitted.case
    assert m.method == case["criterion"]
    assert m.REML == case["REML"]
    assert m.n_dropped == case.get("n_dropped", 0)
    check_structure(m, case)


def test_fixed_effects(fitted):
    check_fixef(fitted.model, fitted.case, LMM)


def test_standard_errors_and_vcov(fitted):
    check_vcov(fitted.model, fitted.case, LMM)


def test_sigma(fitted):
    check_sigma(fitted.model, fitted.case, LMM)


def test_theta(fitted):
    check_theta(fitted.model, fitted.case, LMM)


def test_varcorr(fitted):
    check_varcorr(fitted.model, fitted.case, LMM)


def test_criterion_no_worse_than_lme4(fitted):
    m, case = fitted.model, fitted.case
    assert_criterion_not_worse(m.criterion_value, case["minus2loglik"], f"{case['criterion']} criterion")
    if case["REML"]:
        assert m.reml_criterion == m.criterion_value
        assert_criterion_not_worse(m.reml_criterion, case["reml_criterion"], "REML criterion")
    else:
        assert m.deviance == m.criterion_value
        assert_criterion_not_worse(m.deviance, case["deviance"], "deviance")


def test_criterion_function_equals_lme4s_at_lme4s_theta(fitted):
    """Our profiled deviance evaluated at lme4's θ gives lme4's criterion.

    This separates the objective from the optimizer: the two must agree to rounding
    (lme4's θ is stored with 15 significant digits), here 1e-9 relative.
    """
    m, case = fitted.model, fitted.case
    c = m.compiled
    deviance = ProfiledDeviance(c.terms, c.X, c.y - c.offset, c.weights, reml=case["REML"])
    value = deviance(np.asarray(case["theta"], dtype=float))
    assert value == pytest.approx(case["minus2loglik"], rel=1e-9, abs=0)


def test_loglik_aic_bic(fitted):
    check_statistics_follow_criterion(fitted.model, fitted.case)


def test_conditional_modes(fitted):
    if not fitted.case["ranef"]:
        pytest.skip("the reference omits ranef for this large case")
    check_ranef(fitted.model, fitted.case, LMM)


def test_fitted_head(fitted):
    check_fitted_head(fitted.model, fitted.case, LMM)


def test_scaled_residual_quantiles(fitted):
    m = fitted.model
    y, w = m.compiled.y, m.compiled.weights
    check_scaled_residual_quantiles(m, fitted.case, LMM, lambda eta: (y - eta) * np.sqrt(w) / m.sigma)


def test_singular_fit_is_flagged_and_warned(fitted):
    kinds = [w.category for w in fitted.warnings]
    assert (bm.SingularFitWarning in kinds) == fitted.case["singular"]
    assert bm.ConvergenceWarning not in kinds
