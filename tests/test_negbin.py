"""The negative binomial against lme4 1.1-31: ``glmer(..., family = MASS::negative.binomial(theta))`` with θ
fixed, and ``glmer.nb`` estimating θ (tests/reference/issues/negbin.json, made by make_issues.R; see that
folder's README).  Tolerances are the project's GLMM ones (conftest.GLMM); df counts θ as lme4's does.
Also: simulation, pickling, and the Bayesian model (θ with a prior for glmer_nb fits, fixed otherwise).
"""

from __future__ import annotations

import json
import pickle
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import (
    GLMM,
    assert_criterion_not_worse,
    check_fitted_head,
    check_fixef,
    check_ranef,
    check_statistics_follow_criterion,
    check_structure,
    check_theta,
    check_varcorr,
    check_vcov,
)

import bayesmix as bm
from bayesmix.engine.families import NegativeBinomial
from bayesmix.engine.negbin import theta_ml

ISSUES = Path(__file__).parent / "reference" / "issues"
REF = json.loads((ISSUES / "negbin.json").read_text())
CASES = [k for k in REF if k != "versions"]
ESTIMATED = [k for k in CASES if k.endswith("glmer_nb")]
# PyMC 5's NegativeBinomial log-density agrees with scipy's nbinom.logpmf to about 1e-9 per observation
# (measured: |diff| ≤ 1.2e-9 for y = 0..40), ours to 1e-12 (test_families.py)
PYMC_NB_ACCURACY = 2e-9


def _data(case: dict) -> pd.DataFrame:
    if case["dataset"] == "grouseticks":
        return bm.load_dataset("grouseticks")
    schema = json.loads((ISSUES / "data" / f"{case['dataset']}.schema.json").read_text())
    frame = pd.read_csv(ISSUES / "data" / f"{case['dataset']}.csv")
    for col in schema["columns"]:
        if col["type"] == "factor":
            frame[col["name"]] = pd.Categorical(frame[col["name"]].astype(str), categories=col["levels"])
    return frame


def _data_name(case: dict) -> str:
    """The data name lme4 printed ("   Data: nbsim")."""
    return next(line.split(": ", 1)[1] for line in case["summary_text"].splitlines() if line.startswith("   Data:"))


@lru_cache(maxsize=None)
def _fit(key: str):
    case = REF[key]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # lme4 gave no warnings for these fits: neither may we
        if key in ESTIMATED:
            return bm.glmer_nb(case["formula"], _data(case), data_name=_data_name(case))
        return bm.glmer(case["formula"], _data(case), family=f"negative.binomial(theta = {case['nb_theta']!r})",
                        data_name=_data_name(case))


@pytest.fixture(params=CASES)
def fitted(request):
    return _fit(request.param), REF[request.param]


def test_no_warnings_where_lme4_gave_none():
    assert all(not REF[k]["fit_warnings"] for k in CASES)
    for key in CASES:
        _fit(key)  # raises on any warning


def test_family_and_structure(fitted):
    m, case = fitted
    assert isinstance(m.family, NegativeBinomial)
    assert m.family_name == case["family_string"]
    assert f"{m.family_name}({m.link_name})" == case["family"]
    check_structure(m, case)  # df counts θ: 4 fixef + 1 + 1 (grouseticks), 2 + 1 + 1 (negbin_sim)
    assert m.sigma == case["sigma"] == 1.0


def test_shape_theta(fitted):
    """glmer.nb's θ (Brent on log θ to 5e-5 in both): within 2e-3 relative; fixed θ exactly as given."""
    m, case = fitted
    if m.family.estimated:
        assert m.family.theta == pytest.approx(case["nb_theta"], rel=2e-3)
    else:
        assert m.family.theta == case["nb_theta"]


def test_fixed_effects_and_vcov(fitted):
    m, case = fitted
    check_fixef(m, case, GLMM)
    assert m.vcov_source == "hessian"
    check_vcov(m, case, GLMM)


def test_random_effects(fitted):
    m, case = fitted
    check_theta(m, case, GLMM)
    check_varcorr(m, case, GLMM)
    check_ranef(m, case, GLMM)
    check_fitted_head(m, case, GLMM, np.log)


def test_criterion_no_worse_than_lme4(fitted):
    m, case = fitted
    assert_criterion_not_worse(m.criterion_value, case["minus2loglik_exact_pirls"],
                               "-2 logLik vs lme4's objective at its estimates (PIRLS converged)")
    assert_criterion_not_worse(m.criterion_value, case["minus2loglik"], "-2 logLik vs lme4's reported")
    check_statistics_follow_criterion(m, case)  # logLik, AIC, BIC with lme4's df


def test_laplace_objective_equals_lme4s_at_lme4s_estimates(fitted):
    """Separates the NB family's deviance and AIC from the optimizer (fixed-θ cases: same θ as lme4)."""
    m, case = fitted
    if m.family.estimated:
        pytest.skip("θ differs from lme4's in the last digits; the fixed-θ fit at glmer.nb's θ covers this")
    at_lme4 = m.glmm_fit.objective.theta_beta(np.concatenate([case["theta"], case["fixef"]]))
    assert abs(at_lme4 - case["minus2loglik_exact_pirls"]) <= 1e-5


def test_conditional_deviance(fitted):
    """lme4's deviance(): the sum of squared NB deviance residuals, which moves with the estimates."""
    m, case = fitted
    assert m.deviance == pytest.approx(case["deviance"], rel=1e-3)


def test_summary_prints_lme4s_family_line(fitted):
    m, case = fitted
    ours, theirs = m.summary().splitlines(), case["summary_text"].splitlines()
    assert ours[:5] == theirs[:5]  # title, family line "Negative Binomial(2.0522)  ( log )", formula, data


def test_glmer_nb_search_record():
    m = _fit("grouseticks_glmer_nb")
    record = m.nb_search
    lo, hi = record["interval"]
    assert hi - lo == pytest.approx(6.0) and lo < np.log(m.family.theta) < hi
    assert np.log(record["theta_start"]) == pytest.approx((lo + hi) / 2)
    assert 5 <= record["evaluations"] <= 40


def test_theta_ml_is_mass():
    """MASS::theta.ml(y, mu[, weights]) on 200 simulated counts (families_nb.json, make_families.R)."""
    ref = json.loads((ISSUES / "families_nb.json").read_text())["theta_ml"]
    y, mu = np.array(ref["y"], dtype=float), np.array(ref["mu"])
    theta, se = theta_ml(y, mu, np.ones_like(y))
    assert theta == pytest.approx(ref["theta"], rel=1e-12)
    assert se == pytest.approx(ref["se"], rel=1e-12)
    theta, se = theta_ml(y, mu, np.array(ref["weights"], dtype=float))
    assert theta == pytest.approx(ref["theta_weighted"], rel=1e-12)
    assert se == pytest.approx(ref["se_weighted"], rel=1e-12)


def test_fixed_theta_from_a_family_object_equals_the_string():
    case = REF["negbin_sim_fixed_theta_2"]
    a = _fit("negbin_sim_fixed_theta_2")
    b = bm.glmer(case["formula"], _data(case), family=bm.families.negative_binomial(theta=2))
    np.testing.assert_array_equal(a.beta_values, b.beta_values)
    assert a.criterion_value == b.criterion_value


def test_glmer_nb_refuses_adaptive_quadrature():
    """lme4 1.1-31's glmer.nb(y ~ x + (1 | g), negbin_sim, nAGQ = 5) returns theta = 0.1022 (the lower edge of its
    interval) with logLik -25.04: the AGQ deviance leaves out the saturated log-likelihood, which depends on θ."""
    with pytest.raises(bm.ArgumentError, match="nAGQ = 5 > 1 cannot estimate theta"):
        bm.glmer_nb("y ~ x + (1 | g)", _data(REF["negbin_sim_glmer_nb"]), nAGQ=5)


def test_glmer_nb_refuses_negative_counts():
    data = _data(REF["negbin_sim_glmer_nb"])
    data.loc[3, "y"] = -1
    with pytest.raises(bm.errors.FamilyError, match="negative values are not allowed for the negative binomial"):
        bm.glmer_nb("y ~ x + (1 | g)", data)


# --- simulation and pickling --------------------------------------------------------------------

def test_simulated_counts_have_the_models_marginal_mean():
    """use.u = FALSE: E[y_i] = exp(x_i β + sd²/2) (a scalar random intercept), within 5 Monte Carlo SEs of
    the row total."""
    m = _fit("negbin_sim_glmer_nb")
    sims = m.simulate(nsim=4000, seed=3).to_numpy()
    assert np.all(sims >= 0) and np.all(sims == np.round(sims))
    expected = np.exp(m.compiled.X @ m.beta_values + m.theta_values[0] ** 2 / 2).sum()
    totals = sims.sum(axis=0)
    assert abs(totals.mean() - expected) < 5 * totals.std() / np.sqrt(len(totals))


@pytest.mark.parametrize("key", ["grouseticks_glmer_nb", "negbin_sim_fixed_theta_2"])
def test_fits_pickle(key):
    m = _fit(key)
    back = pickle.loads(pickle.dumps(m))
    assert back.family_name == m.family_name and back.family.theta == m.family.theta
    np.testing.assert_array_equal(back.fitted(), m.fitted())
    assert back.summary() == m.summary()


# --- the Bayesian model ------------------------------------------------------------------------

def test_pymc_likelihood_is_the_familys_loglik():
    """The PyMC model's log density at a point is Σ log N(u; 0, 1) + Σ family.loglik (θ from the prior's RV)."""
    pm = pytest.importorskip("pymc")
    m = _fit("negbin_sim_glmer_nb")
    model = m.pymc_model
    assert "nb_theta" in [rv.name for rv in model.free_RVs]
    rng = np.random.default_rng(1)
    u = rng.standard_normal(m.compiled.terms[0].nlevels)
    beta, sd, theta = m.beta_values + 0.01, 0.45, 1.3
    conditioned = pm.do(model, {"beta": beta, "sd_g": np.array([sd]), "nb_theta": theta})
    value = float(conditioned.compile_logp(jacobian=False)({"u_g": u[:, None]}))
    mu = np.exp(m.compiled.X @ beta + sd * u[m.compiled.terms[0].factor.codes])
    expected = (np.sum(-0.5 * u**2 - 0.5 * np.log(2 * np.pi))
                + NegativeBinomial(theta).loglik(m.compiled.y, mu, np.ones(m.nobs)).sum())
    assert value == pytest.approx(expected, abs=PYMC_NB_ACCURACY * m.nobs)


def test_priors_name_and_default_for_the_shape():
    from bayesmix.bayes.pymc_model import default_priors, prior_names, resolve_priors

    m = _fit("negbin_sim_glmer_nb")
    assert "nb_theta" in prior_names(m)
    assert repr(default_priors(m).family["nb_theta"]) == "Gamma(alpha=0.01, beta=0.01)"
    assert repr(resolve_priors(m, {"nb_theta": bm.Prior("Exponential", lam=0.5)}).family["nb_theta"]) == \
        "Exponential(lam=0.5)"
    with pytest.raises(bm.PriorError, match="negative values"):
        resolve_priors(m, {"nb_theta": bm.Prior("Normal", mu=1.0, sigma=1.0)})
    assert "nb_theta" not in prior_names(_fit("negbin_sim_fixed_theta_2"))  # a θ given is fixed


def test_sample_glmer_nb_by_pymc_and_compare_shows_theta():
    """The PyMC route (sampler="pymc") on the same model: nb_theta with its prior."""
    pytest.importorskip("pymc")
    m = _fit("negbin_sim_glmer_nb")
    post = m.sample(draws=150, tune=200, chains=2, random_seed=2, progressbar=False, sampler="pymc")
    p = post["posterior"]
    assert "nb_theta" in p and p["nb_theta"].dims == ("chain", "draw")
    assert "nb_theta" in p.attrs["priors"]
    table = bm.compare(m, post)
    row = table.loc["nb_theta"]
    assert row["kind"] == "family" and row["estimate"] == m.family.theta
    # near-flat priors: the posterior centres near the ML estimate (its SD is about 0.22 here)
    assert abs(row["mean"] - row["estimate"]) < 2 * row["sd"]
    assert abs(table.loc["beta[x]", "mean"] - m.fixef["x"]) < 2 * table.loc["beta[x]", "sd"]


def test_fast_posterior_of_glmer_nb_is_the_pymc_models():
    """The fast route's log density (θ on the log scale with its prior and Jacobian, u kept) is the PyMC
    model's at the same unconstrained point, and its gradient the central differences'."""
    pytest.importorskip("pymc")
    from bayesmix.bayes.posterior import FastPosterior
    from bayesmix.bayes.pymc_model import resolve_priors

    m = _fit("negbin_sim_glmer_nb")
    post = FastPosterior(m, resolve_priors(m, None), collapsed=False)
    x = post.start() + 0.1 * np.random.default_rng(2).standard_normal(post.dim)
    beta, u, v = post.split(x)
    point = {"beta": beta, "sd_g_log__": v, "u_g": u.reshape(-1, 1), "nb_theta_log__": post.family_part(x)[0]}
    value, grad = post.logp_and_grad(x)
    assert value == pytest.approx(float(m.pymc_model.compile_logp()(point)), abs=PYMC_NB_ACCURACY * m.nobs)
    h = 1e-6
    numeric = np.array([(post.logp_and_grad(x + h * e)[0] - post.logp_and_grad(x - h * e)[0]) / (2 * h)
                        for e in np.eye(post.dim)])
    np.testing.assert_allclose(grad, numeric, rtol=2e-5, atol=2e-5 * (1 + np.abs(grad).max()))


def test_sample_glmer_nb_by_the_fast_route():
    """The default sampler: nutpie on bayesmix's NumPy density, θ sampled with the random effects kept."""
    m = _fit("negbin_sim_glmer_nb")
    post = m.sample(draws=300, tune=300, chains=2, random_seed=1, progressbar=False)
    p = post["posterior"]
    assert "NumPy" in p.attrs["route"] and "non-centred" in p.attrs["route"]
    assert p["nb_theta"].dims == ("chain", "draw") and np.all(p["nb_theta"].values > 0)
    table = bm.compare(m, post)
    assert list(table.index) == ["beta[(Intercept)]", "beta[x]", "sd_g[(Intercept)]", "nb_theta"]
    row = table.loc["nb_theta"]
    assert row["estimate"] == m.family.theta and abs(row["mean"] - row["estimate"]) < 2 * row["sd"]
    assert row["r_hat"] < 1.05


def test_fixed_theta_takes_the_fast_route():
    """θ given: the fast sampler's NumPy density (glm_terms) serves, with the scalar term integrated out."""
    m = _fit("negbin_sim_fixed_theta_2")
    post = m.sample(draws=200, tune=200, chains=2, random_seed=4, progressbar=False)
    p = post["posterior"]
    assert "quadrature" in p.attrs["route"] and "NumPy" in p.attrs["route"]
    assert "nb_theta" not in p
    table = bm.compare(m, post)
    assert abs(table.loc["beta[x]", "mean"] - m.fixef["x"]) < 2 * table.loc["beta[x]", "sd"]


def test_fast_full_density_is_the_pymc_model_logp_for_fixed_theta():
    pm = pytest.importorskip("pymc")
    from bayesmix.bayes.densities import FullModel

    m = _fit("negbin_sim_fixed_theta_2")
    rng = np.random.default_rng(5)
    u = rng.standard_normal(m.compiled.terms[0].nlevels)
    beta, sd = m.beta_values - 0.02, 0.37
    conditioned = pm.do(m.pymc_model, {"beta": beta, "sd_g": np.array([sd])})
    expected = float(conditioned.compile_logp(jacobian=False)({"u_g": u[:, None]}))
    value, *_ = FullModel(m).value_and_grad(beta, None, [np.array([[sd]])], u)
    assert value == pytest.approx(expected, abs=PYMC_NB_ACCURACY * m.nobs)



def test_anova_of_two_glmer_nb_fits_is_lme4s():
    """lme4 compares glmer.nb fits whatever their θ (families_nb.json, make_families.R): θ counted in npar."""
    ref = json.loads((ISSUES / "families_nb.json").read_text())["glmer_nb_anova"]
    small = bm.glmer_nb(ref["formulas"][0], _data(REF["negbin_sim_glmer_nb"]))
    big = _fit("negbin_sim_glmer_nb")
    assert small.family.theta == pytest.approx(ref["nb_theta"][0], rel=2e-3)
    table = bm.anova(small, big)
    assert list(table["npar"]) == ref["npar"]
    # lme4's reported logLik of the small fit is 2e-5 above its own Laplace objective at its estimates
    # (PIRLS stopped early); compare with that objective, evaluated with lme4's θ by ours
    at_lme4 = bm.glmer(ref["formulas"][0], _data(REF["negbin_sim_glmer_nb"]),
                       family=NegativeBinomial(ref["nb_theta"][0])).glmm_fit.objective.theta_beta(
        np.array([ref["theta_small"], ref["fixef_small"]]))
    assert_criterion_not_worse(small.criterion_value, at_lme4, "-2 logLik of the smaller glmer.nb fit")
    assert small.loglik == pytest.approx(ref["loglik"][0], abs=1e-4)
    # χ² = 2 Δ logLik: within the two logLiks' differences from lme4's
    assert table["Chisq"].iloc[1] == pytest.approx(ref["chisq"], abs=2e-4)
    assert table["Df"].iloc[1] == ref["df"]


def test_anova_still_refuses_different_families():
    with pytest.raises(bm.InferenceError, match="different families"):
        bm.anova(_fit("negbin_sim_glmer_nb"), bm.glmer("y ~ x + (1 | g)", _data(REF["negbin_sim_glmer_nb"]),
                                                       family="poisson"))


def test_glmer_nb_on_poisson_counts_stops_where_lme4_does_and_says_why():
    """Counts without overdispersion (families_nb.json, make_families.R): theta.ml hits its iteration limit
    (lme4 warns "iteration limit reached") and θ stops at the lower edge of log θ₀ ± 3, as lme4's does;
    bayesmix also says that θ sits on the edge."""
    ref = json.loads((ISSUES / "families_nb.json").read_text())["glmer_nb_poisson_counts"]
    data = pd.DataFrame({"y": ref["y"], "x": ref["x"], "g": pd.Categorical(ref["g"])})
    with pytest.warns(bm.ConvergenceWarning) as caught:
        m = bm.glmer_nb("y ~ x + (1 | g)", data)
    texts = [str(w.message) for w in caught]
    assert any("iteration limit reached" in t for t in texts) and "iteration limit reached" in ref["warnings"]
    assert any("at the edge of its search interval" in t for t in texts)
    assert m.family.theta == pytest.approx(ref["nb_theta"], rel=2e-3)
    assert np.log(m.family.theta) == pytest.approx(m.nb_search["interval"][0], abs=1e-3)
    assert_criterion_not_worse(m.criterion_value, -2 * ref["loglik"], "-2 logLik at the edge θ")
    assert m.loglik == pytest.approx(ref["loglik"], abs=1e-3)
    assert m.beta_values == pytest.approx(ref["fixef"], abs=2e-2 * np.sqrt(np.diag(m.vcov_values)).min())


def test_prior_weights_multiply_the_log_likelihood():
    """A weight of 2 is the row twice (MASS's glm.nb semantics, lme4's for Poisson): the weighted fixed-θ fit
    equals the fit to the data with those rows duplicated.  (lme4 1.1-31's glmer with
    negative.binomial(1.8667) and these weights returns a singular fit with logLik -2466.6 and slope 0.246,
    far from the unweighted 0.596: not used as a reference.)"""
    data = _data(REF["negbin_sim_glmer_nb"])
    w = np.where(np.arange(len(data)) % 2, 1.0, 2.0)
    family = bm.families.negative_binomial(theta=1.8667)
    weighted = bm.glmer("y ~ x + (1 | g)", data, weights=w, family=family)
    doubled = bm.glmer("y ~ x + (1 | g)", pd.concat([data, data[w == 2]], ignore_index=True), family=family)
    assert weighted.criterion_value == pytest.approx(doubled.criterion_value, abs=1e-6)
    np.testing.assert_allclose(weighted.beta_values, doubled.beta_values, atol=1e-4 * weighted.se.min())
    np.testing.assert_allclose(weighted.theta_values, doubled.theta_values, rtol=1e-4)
    nb = bm.glmer_nb("y ~ x + (1 | g)", data, weights=w)
    assert nb.family.theta == pytest.approx(bm.glmer_nb("y ~ x + (1 | g)", pd.concat(
        [data, data[w == 2]], ignore_index=True)).family.theta, rel=1e-3)


def test_glmer_nb_pointwise_loglik_and_predictive_use_each_draws_theta():
    """The log-likelihood group equals PyMC's compute_log_likelihood on the PyMC model (θ per draw), and the
    posterior predictive counts centre on the data's mean."""
    import copy

    pm = pytest.importorskip("pymc")
    m = _fit("negbin_sim_glmer_nb")
    post = m.sample(draws=100, tune=200, chains=2, random_seed=1, progressbar=False)
    ours = m.log_likelihood(copy.deepcopy(post))["log_likelihood"]["y"].values
    theirs = pm.compute_log_likelihood(copy.deepcopy(post), model=m.pymc_model, progressbar=False)
    np.testing.assert_allclose(ours, theirs["log_likelihood"]["y"].values, rtol=1e-10, atol=PYMC_NB_ACCURACY)
    yrep = m.sample_posterior_predictive(copy.deepcopy(post), random_seed=2)["posterior_predictive"]["y"].values
    assert yrep.shape == (2, 100, m.nobs) and np.all(yrep >= 0) and np.all(yrep == np.round(yrep))
    # the mean count over 60,000 replicated values: its Monte Carlo SE is about 0.03 here
    assert abs(yrep.mean() - m.compiled.y.mean()) < 0.5
