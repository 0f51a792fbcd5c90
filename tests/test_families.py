"""Families carry their behaviour: log-likelihoods against scipy.stats, simulation moments, R's
negative.binomial functions (MASS 7.3-58.2, tests/reference/issues/families_nb.json made by
make_families.R), pickling, reading R calls, and no family/link switches outside the families module.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from bayesmix.engine import families as fam
from bayesmix.engine.links import LINKS
from bayesmix.errors import FamilyError

ROOT = Path(__file__).resolve().parents[1]
NB_REF = json.loads((ROOT / "tests" / "reference" / "issues" / "families_nb.json").read_text())

RNG = np.random.default_rng(20261129)
MU_POS = np.array([0.4, 1.3, 2.2, 3.9, 0.7, 9.5])
WEIGHTS = np.array([1.0, 2.0, 0.5, 1.0, 3.0, 1.5])


def _every_family():
    """One instance of every family with every link it allows (the negative binomial at two shapes)."""
    for cls in (fam.Binomial, fam.Poisson, fam.Gamma, fam.InverseGaussian, fam.Gaussian):
        for link in cls.allowed_links:
            yield cls(link)
    for link in fam.NegativeBinomial.allowed_links:
        yield fam.NegativeBinomial(2.0, link)
    yield fam.NegativeBinomial(0.7, estimated=True)


# --- log-likelihood against scipy.stats ----------------------------------------------------------

def test_binomial_loglik_is_scipys_with_weights_as_trials():
    trials = np.array([1.0, 5.0, 12.0, 3.0, 8.0, 1.0])
    successes = np.array([0.0, 2.0, 12.0, 1.0, 5.0, 1.0])
    mu = np.array([0.3, 0.45, 0.9, 0.2, 0.6, 0.99])
    expected = stats.binom.logpmf(successes, trials, mu)
    np.testing.assert_allclose(fam.Binomial().loglik(successes / trials, mu, trials), expected, rtol=1e-12)


def test_binomial_deviance_residuals_are_rs_formula_for_outcomes_and_proportions():
    """R's binomial()$dev.resids, 2 wt (y log(y/mu) + (1-y) log((1-y)/(1-mu))), to the bit for 0/1 outcomes
    (computed from the one term that does not vanish) and for proportions."""
    from scipy.special import xlogy

    rng = np.random.default_rng(4)
    mu, wt = rng.uniform(1e-6, 1 - 1e-6, 500), rng.uniform(0.5, 3.0, 500)
    for y in (rng.integers(0, 2, 500).astype(float), rng.integers(0, 6, 500) / 5.0):
        expected = 2.0 * wt * (xlogy(y, y / mu) + xlogy(1.0 - y, (1.0 - y) / (1.0 - mu)))
        np.testing.assert_array_equal(fam.get_family("binomial").dev_resids(y, mu, wt), expected)


def test_poisson_loglik_is_scipys_times_the_weights():
    y = np.array([0.0, 1.0, 4.0, 3.0, 0.0, 12.0])
    np.testing.assert_allclose(fam.Poisson().loglik(y, MU_POS, WEIGHTS), WEIGHTS * stats.poisson.logpmf(y, MU_POS),
                               rtol=1e-12)


def test_gaussian_loglik_is_scipys_with_weights_scaling_the_precision():
    y = RNG.normal(size=6)
    expected = stats.norm.logpdf(y, MU_POS, 1.7 / np.sqrt(WEIGHTS))
    np.testing.assert_allclose(fam.Gaussian().loglik(y, MU_POS, WEIGHTS, 1.7), expected, rtol=1e-12)


def test_gamma_loglik_is_scipys_with_lme4s_variance():
    """lme4: Var(y) = σ² μ² / w, so the shape is w / σ²."""
    y = np.array([0.3, 1.1, 2.9, 4.4, 0.5, 11.0])
    sigma = 0.6
    shape = WEIGHTS / sigma**2
    expected = stats.gamma.logpdf(y, shape, scale=MU_POS / shape)
    np.testing.assert_allclose(fam.Gamma().loglik(y, MU_POS, WEIGHTS, sigma), expected, rtol=1e-12)


def test_inverse_gaussian_loglik_is_scipys():
    """Var(y) = σ² μ³ / w: scipy's invgauss(μ/λ, scale=λ) with λ = w / σ²."""
    y = np.array([0.3, 1.1, 2.9, 4.4, 0.5, 11.0])
    sigma = 0.4
    lam = WEIGHTS / sigma**2
    expected = stats.invgauss.logpdf(y, MU_POS / lam, scale=lam)
    np.testing.assert_allclose(fam.InverseGaussian().loglik(y, MU_POS, WEIGHTS, sigma), expected, rtol=1e-10)


@pytest.mark.parametrize("theta", [0.7, 2.0, 15.25])
def test_negative_binomial_loglik_is_scipys_times_the_weights(theta):
    y = np.array([0.0, 1.0, 4.0, 3.0, 0.0, 12.0])
    expected = WEIGHTS * stats.nbinom.logpmf(y, theta, theta / (theta + MU_POS))
    np.testing.assert_allclose(fam.NegativeBinomial(theta).loglik(y, MU_POS, WEIGHTS), expected, rtol=1e-12)


@pytest.mark.parametrize("family", [fam.Binomial(), fam.Poisson(), fam.NegativeBinomial(1.3)], ids=repr)
def test_aic_is_minus_twice_the_summed_loglik(family):
    """R's family$aic for the families without a scale: exactly −2 Σ log p(y | μ)."""
    y = np.array([0.0, 1.0, 4.0, 3.0, 0.0, 12.0])
    mu, w = MU_POS, WEIGHTS
    if family.response_is_probability:
        w = np.array([1.0, 5.0, 12.0, 3.0, 8.0, 13.0])
        y, mu = y / w, np.array([0.3, 0.45, 0.4, 0.6, 0.1, 0.8])
    dev = family.dev_resids(y, mu, w).sum()
    assert family.aic(y, w, mu, w, dev) == pytest.approx(-2 * family.loglik(y, mu, w).sum(), rel=1e-13)


# --- R's negative.binomial -----------------------------------------------------------------------

@pytest.mark.parametrize("case", NB_REF["cases"], ids=lambda c: f"theta={c['theta']}")
def test_negative_binomial_functions_are_mass(case):
    y, mu, wt = (np.array(NB_REF[k], dtype=float) for k in ("y", "mu", "wt"))
    f = fam.NegativeBinomial(case["theta"])
    assert f.name == case["family"]
    assert f.link.name == case["link"]
    np.testing.assert_allclose(f.variance(mu), case["variance"], rtol=1e-14)
    np.testing.assert_allclose(f.dev_resids(y, mu, wt), case["dev_resids"], rtol=1e-12, atol=1e-15)
    assert f.aic(y, np.ones_like(y), mu, wt, 0.0) == pytest.approx(case["aic"], rel=1e-13)
    np.testing.assert_allclose(f.initialize(y, wt)[2], case["mustart"], rtol=1e-14)  # JSON keeps 15 digits
    np.testing.assert_allclose(f.loglik(y, mu, np.ones_like(y)), case["dnbinom_log"], rtol=1e-12)


def test_negative_binomial_name_is_mass_format_of_theta_rounded():
    names = [fam.NegativeBinomial(th).name for th in NB_REF["family_names_theta"]]
    assert names == NB_REF["family_names"]


# --- simulation moments --------------------------------------------------------------------------

N_SIM = 200_000


@pytest.mark.parametrize("family,sigma", [
    (fam.Binomial(), 1.0), (fam.Poisson(), 1.0), (fam.Gaussian(), 1.3), (fam.Gamma(), 0.5),
    (fam.InverseGaussian(), 0.3), (fam.NegativeBinomial(1.7), 1.0), (fam.NegativeBinomial(25.0), 1.0),
], ids=lambda v: repr(v) if not isinstance(v, float) else f"sigma={v}")
def test_simulated_mean_and_variance_are_the_familys(family, sigma):
    """Mean μ and variance σ² V(μ) / w (binomial: a proportion of w trials), within 5 Monte Carlo SEs."""
    mu = 0.35 if family.response_is_probability else 2.5
    w = 4.0 if family.response_is_probability or family.has_scale else 1.0
    draws = family.simulate(np.full(N_SIM, mu), np.full(N_SIM, w), sigma, np.random.default_rng(11))
    variance = sigma**2 * float(family.variance(np.array([mu]))[0]) / w
    assert abs(draws.mean() - mu) < 5 * np.sqrt(variance / N_SIM)
    # the SE of a sample variance is about √(2/n)·variance for these (light-tailed enough) laws
    assert draws.var() == pytest.approx(variance, rel=5 * np.sqrt(2.0 / N_SIM) * 4)


def test_binomial_simulation_refuses_fractional_trials():
    with pytest.raises(FamilyError, match="whole numbers of trials"):
        fam.Binomial().simulate(np.full(3, 0.5), np.array([1.0, 2.5, 3.0]), 1.0, np.random.default_rng(1))


# --- the fast sampler's terms are the log-likelihood ----------------------------------------------

@pytest.mark.parametrize("family", [f for f in _every_family() if f.fast_route() == "glm"], ids=repr)
def test_glm_terms_are_the_loglik_and_its_derivatives(family):
    rng = np.random.default_rng(3)
    if family.response_is_probability:
        w = rng.integers(1, 9, size=20).astype(float)
        y = rng.integers(0, 9, size=20) % (w + 1) / w
    else:
        w = rng.uniform(0.5, 2.0, size=20)
        y = rng.poisson(3.0, size=20).astype(float)
    eta = rng.normal(0.3, 0.8, size=20)
    data, const = family.glm_data(y, w)
    logp, d1, info = family.glm_terms(eta, data)
    mu = family.link.linkinv(eta)
    assert const + logp.sum() == pytest.approx(family.loglik(y, mu, w).sum(), rel=1e-11)
    h = 1e-6
    numeric = (family.glm_terms(eta + h, data)[0] - family.glm_terms(eta - h, data)[0]) / (2 * h)
    np.testing.assert_allclose(d1, numeric, rtol=1e-6, atol=1e-7)
    # Fisher information: w μ'(η)² / V(μ) (binomial: trials × that, V per trial)
    np.testing.assert_allclose(info, w * family.link.mu_eta(eta) ** 2 / family.variance(mu), rtol=1e-9)
    np.testing.assert_allclose(family.glm_score(eta, data)[0], d1, rtol=1e-12)


# --- pickling, repr, reading R calls ---------------------------------------------------------------

@pytest.mark.parametrize("family", list(_every_family()), ids=repr)
def test_every_family_pickles_with_its_behaviour(family):
    back = pickle.loads(pickle.dumps(family))
    assert type(back) is type(family) and back.name == family.name and back.link == family.link
    eta = np.array([0.2, 0.5, 0.8])
    np.testing.assert_array_equal(back.link.linkinv(eta), family.link.linkinv(eta))
    mu = np.abs(family.link.linkinv(eta)) % 1 if family.response_is_probability else np.array([0.5, 1.0, 2.0])
    np.testing.assert_array_equal(back.variance(mu), family.variance(mu))
    assert back.bayes_parameters() == family.bayes_parameters()


@pytest.mark.parametrize("name", list(LINKS))
def test_every_link_pickles(name):
    assert pickle.loads(pickle.dumps(LINKS[name])) == LINKS[name]


@pytest.mark.parametrize("spec,theta,link", [
    ("negative.binomial(theta = 2)", 2.0, "log"), ("negative.binomial(2)", 2.0, "log"),
    ("MASS::negative.binomial(theta=1.5, link='sqrt')", 1.5, "sqrt"), ("negative_binomial(0.5, identity)", 0.5, "identity"),
    ("negative.binomial(link = \"sqrt\", theta = 3)", 3.0, "sqrt"),
])
def test_negative_binomial_from_r_calls(spec, theta, link):
    f = fam.get_family(spec)
    assert isinstance(f, fam.NegativeBinomial) and f.theta == theta and f.link.name == link
    assert not f.estimated and f.bayes_parameters() == {} and f.extra_df == 1


@pytest.mark.parametrize("spec,match", [
    ("negative.binomial", "needs its shape"), ("negative.binomial(theta = -1)", "theta must be a positive number"),
    ("negative.binomial(theta = abc)", "theta must be a positive number"),
    ("negative.binomial(2, log, 3)", "does not take the argument"), ("negative.binomial(2, logit)", "link 'logit'"),
    ("poisson(log, zap = 1)", "does not take the argument"),
])
def test_bad_negative_binomial_calls(spec, match):
    with pytest.raises(FamilyError, match=match):
        fam.get_family(spec)


def test_the_negative_binomial_class_alone_asks_for_theta():
    with pytest.raises(FamilyError, match="needs its shape"):
        fam.get_family(fam.NegativeBinomial)


def test_the_estimated_shape_is_a_bayesian_parameter():
    assert fam.negative_binomial(theta=2).bayes_parameters() == {}
    estimated = fam.NegativeBinomial(2.0, estimated=True)
    assert estimated.bayes_parameters() == {"nb_theta": ("Gamma", {"alpha": 0.01, "beta": 0.01})}
    assert estimated.parameter_estimates() == {"nb_theta": 2.0}
    assert estimated.fast_route() == fam.NegativeBinomial(2.0).fast_route() == "glm"
    assert fam.NegativeBinomial(2.0).glm_parameter_scores(np.zeros(3), {"y": np.ones(3), "w": np.ones(3)}) == {}
    assert estimated.with_parameters({"nb_theta": 3.5}).theta == 3.5


def test_negative_binomial_theta_score_is_the_logliks_derivative():
    """glm_parameter_scores: d log p / dθ per observation, constants included (central differences)."""
    rng = np.random.default_rng(4)
    y, w, eta = rng.poisson(3.0, 30).astype(float), rng.uniform(0.5, 2.0, 30), rng.normal(1.0, 0.7, 30)
    theta, h = 1.7, 1e-6
    family = fam.NegativeBinomial(theta, estimated=True)
    data, _ = family.glm_data(y, w)
    score = family.glm_parameter_scores(eta, data)["nb_theta"]
    mu = np.exp(eta)
    numeric = (fam.NegativeBinomial(theta + h).loglik(y, mu, w) - fam.NegativeBinomial(theta - h).loglik(y, mu, w)) / (2 * h)
    np.testing.assert_allclose(score, numeric, rtol=1e-6, atol=1e-8)


# --- no family switches outside the families module -------------------------------------------------

_SUBJECT = r"""(?:\b\w*(?:family|fam|link)\w*(?:\.(?:name|link))*|\(\s*[\w.]*family[\w.]*\s*,\s*[\w.]*link[\w.]*\s*\))"""
_TEST = r"""(?:\s*(?:==|!=)|\s+(?:not\s+)?in\s*[\(\[{]|\s+(?:not\s+)?in\s+_?[A-Z][A-Z_]*\b)"""
# a family, family name, link or link name compared with something: ==, !=, or membership in a literal or a constant
# or anything compared with a name only a family or link has
_NAMES = r"""(?:==|!=)\s*["'](?:binomial|poisson|gaussian|inverse\.gaussian|Negative Binomial|logit|probit|cloglog|cauchit|1/mu\^2)"""
SWITCH = re.compile(f"{_SUBJECT}{_TEST}|{_NAMES}")


def test_no_family_or_link_switches_outside_the_families_module():
    offenders = []
    allowed = {ROOT / "bayesmix" / "engine" / "families.py"}
    for path in sorted((ROOT / "bayesmix").rglob("*.py")):
        if path in allowed:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if SWITCH.search(code):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "family/link switches outside engine/families.py:\n" + "\n".join(offenders)


def test_the_switch_pattern_catches_the_old_switches():
    for line in ('if fam.name == "binomial":', 'if family == "gaussian":', 'if self.link == "logit":',
                 '(lik.family, lik.link) in {("binomial", "logit")}', 'if link == "identity":',
                 'elif result.family.name != "poisson":', 'if name == "cloglog":'):
        assert SWITCH.search(line), line


# --- the fast sampler draws u for every family it takes --------------------------------------------

def test_collapsed_poisson_sampling_draws_the_random_effects():
    """ScalarTermGlmm.draw_u_batch evaluates the family's terms for (draws × observations): on main before
    the families refactor this broke for every family but binomial-logit (a broadcasting error)."""
    pytest.importorskip("nutpie")



    from conftest import small_poisson_glmm

    g, _ = small_poisson_glmm()
    post = g.sample(draws=100, tune=100, chains=1, random_seed=1, progressbar=False)
    p = post["posterior"]
    assert "quadrature" in p.attrs["route"]
    assert p["b_g"].shape == (1, 100, 12, 1) and np.all(np.isfinite(p["b_g"].values))
    # the draws of b centre near the conditional modes
    b_mean = p["b_g"].mean(("chain", "draw")).values[:, 0]
    assert np.corrcoef(b_mean, g.ranef["g"].to_numpy()[:, 0])[0, 1] > 0.9
