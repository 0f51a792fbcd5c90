"""The result record: the optimizer record (lme4's optinfo), one builder for every fit path, lme4's residual types."""

import warnings

import numpy as np
import pytest

import bayesmix as bm
from bayesmix.errors import SingularFitWarning


@pytest.fixture(scope="module")
def sleep():
    return bm.load_dataset("sleepstudy")


def test_optimizer_record_describes_the_search(sleep):
    m = bm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    rec = m.optsum
    # a small system: the dense path's exact gradient drives L-BFGS-B (engine/lmm.py DenseSystem)
    assert rec.optimizer == "L-BFGS-B" and rec.newton_polish and rec.converged
    np.testing.assert_array_equal(rec.final, m.theta_values)
    np.testing.assert_array_equal(rec.initial, [1.0, 0.0, 1.0])  # lme4's start
    assert rec.feval > 10 and rec.fmin == pytest.approx(m.criterion_value)
    # at the optimum the criterion's gradient vanishes relative to its curvature (lme4's scaled gradient)
    scaled = np.linalg.solve(rec.hessian, rec.gradient)
    assert np.max(np.abs(scaled)) < 1e-4


def test_glmer_record_counts_both_stages():
    cbpp = bm.load_dataset("cbpp")
    g = bm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial")
    assert g.optsum.optimizer == "bobyqa" and g.optsum.converged
    assert len(g.optsum.final) == 1 + 4  # θ and (whitened) β of stage 2
    assert g.optsum.feval > 20


def test_refits_come_through_the_same_builder():
    """An ML refit of a singular REML fit warns with the same class as the fit itself."""
    dye2 = bm.load_dataset("Dyestuff2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = bm.lmer("Yield ~ 1 + (1 | Batch)", dye2)
        refit = m.refit(dye2["Yield"].to_numpy()[::-1].copy())
    assert type(refit) is type(m) and refit.optsum is not None
    assert sum(issubclass(w.category, SingularFitWarning) for w in caught) >= 1


def test_working_residuals_of_a_weighted_lmm_are_response_residuals(sleep):
    """lme4: residuals(type = "working") of an lmerMod is y - fitted, weights or not."""
    w = np.linspace(0.5, 2.0, len(sleep))
    m = bm.lmer("Reaction ~ Days + (1 | Subject)", sleep, weights=w)
    response = m.residuals(type="response")
    np.testing.assert_allclose(m.residuals(type="working"), response, rtol=0, atol=1e-12)
    np.testing.assert_allclose(m.residuals(type="pearson"), response * np.sqrt(w), rtol=1e-12)


def test_scalar_laplace_is_the_engines_laplace_deviance():
    """engine.scalar_laplace (the profile's fast PIRLS) and engine.glmm give one criterion."""
    from bayesmix.engine.scalar_laplace import ScalarLaplace

    cbpp = bm.load_dataset("cbpp")
    g = bm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial")
    fast = ScalarLaplace(g.compiled, g.family)
    for shift in (0.0, 0.3, -0.2):
        theta, beta = g.theta_values + abs(shift), g.beta_values + shift
        general = g.glmm_fit.objective.theta_beta(np.concatenate([theta, beta]))
        assert fast(theta, beta) == pytest.approx(general, rel=1e-9, abs=1e-8)


@pytest.mark.parametrize("reml", [True, False])
def test_one_deviance_formula_for_optimizer_profiles_and_ddf(sleep, reml):
    """engine.deviance: profiled over σ it is the optimizer's criterion; at σ̂ it is the same number."""
    from bayesmix.engine import deviance

    w = np.linspace(0.5, 2.0, len(sleep))
    m = bm.lmer("Reaction ~ Days + (Days | Subject)", sleep, REML=reml, weights=w)
    dev, f = m.profiled_deviance, m.factorization
    slw = dev.cross.sum_log_weights
    assert deviance.profiled(f, dev.n, m.compiled.p, reml, slw) == pytest.approx(m.criterion_value, rel=1e-12)
    dof = dev.n - (m.compiled.p if reml else 0)
    sigma_hat = np.sqrt(f.pwrss / dof)
    assert deviance.at_sigma(f, dev.n, m.compiled.p, sigma_hat, reml, slw) == pytest.approx(m.criterion_value,
                                                                                             rel=1e-12)
    assert deviance.at_sigma(f, dev.n, m.compiled.p, 1.1 * sigma_hat, reml, slw) > m.criterion_value
