"""The Bayesian twin: the PyMC model's structure, proofs that it is lme4's model, sampling, priors, compare().

The proofs integrate the PyMC model's own log density (its ``logp`` graph, Hessian by
pytensor) over the random effects at the engine's estimates and recover lme4's ML, REML
and Laplace objectives; the fast sampler's NumPy densities are checked against the same
graph.  Heavier sampling checks live in benchmarks/bayes_checks.py (slow tests here).
"""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import cached_fit, load_case
from scipy.optimize import minimize
from scipy.special import xlogy

import bayesmix as bm
from bayesmix.bayes.densities import (
    CollapsedLmm,
    FullModel,
    ScalarTermGlmm,
    corr_cholesky,
    lkj_normalizing_constant,
    prior_logp,
)
from bayesmix.bayes.posterior import FastPosterior
from bayesmix.bayes.pymc_model import (
    Prior,
    PriorError,
    default_priors,
    prior_names,
    resolve_priors,
)

pm = pytest.importorskip("pymc")
pytensor = pytest.importorskip("pytensor")
pytest.importorskip("pytensor.graph")
pt = pytest.importorskip("pytensor.tensor")

FLAT = {"beta": Prior("Flat"), "sigma": Prior("HalfFlat"), "sd": Prior("HalfFlat")}


def _model(case_id):
    return cached_fit(case_id).model


def _factor_values(m) -> dict:
    """sd_<label> and corr_chol_<label> at the fit's estimates (L = chol(Σ) = σ T)."""
    out = {}
    for label, term, cov in zip(m.group_labels(), m.compiled.terms, m.term_covariances()):
        L = np.linalg.cholesky(cov) if term.k > 1 else np.sqrt(cov)
        sd = np.sqrt(np.sum(L**2, axis=1))
        out[f"sd_{label}"] = sd
        if term.k > 1:
            out[f"corr_chol_{label}"] = L / sd[:, None]
    return out


def laplace_log_integral(model, fixed: dict, integrate: list[str], start: np.ndarray) -> tuple[float, np.ndarray]:
    """log ∫ exp(model.logp) over the ``integrate`` variables with the others ``fixed``:
    Newton to the mode, then the Laplace approximation with pytensor's exact Hessian
    (exact for a Gaussian integrand)."""
    conditioned = pm.do(model, fixed)
    values = [conditioned.rvs_to_values[conditioned[name]] for name in integrate]
    shapes = {name: value.shape for name, value in conditioned.initial_point().items()}
    x = pt.vector("x")
    replace, start_at = {}, 0
    for v in values:
        shape = shapes[v.name]
        size = int(np.prod(shape))
        replace[v] = x[start_at : start_at + size].reshape(shape)
        start_at += size
    logp = pytensor.graph.graph_replace(conditioned.logp(jacobian=False), replace)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*BLAS.*")  # pytensor's C backend notice, irrelevant here
        fn = pytensor.function([x], [logp, pt.grad(logp, x), pytensor.gradient.hessian(logp, x)], mode="FAST_COMPILE")
    point = np.asarray(start, dtype=float)
    for _ in range(50):
        value, grad, hess = fn(point)
        step = np.linalg.solve(hess, grad)
        point = point - step
        if np.max(np.abs(step)) < 1e-10:
            break
    value, grad, hess = fn(point)
    sign, logdet = np.linalg.slogdet(-hess)
    assert sign > 0
    return float(value + 0.5 * len(point) * np.log(2 * np.pi) - 0.5 * logdet), point


# --- the PyMC model -----------------------------------------------------------------------


def test_pymc_model_structure_and_coords():
    m = _model("sleepstudy_slope_reml")
    model = m.pymc_model
    assert model is not m.pymc_model  # a new model at every access (issue 13: extending one changes no other)
    free = {rv.name for rv in model.free_RVs}
    assert free == {"beta", "sigma", "sd_Subject", "corr_chol_Subject", "u_Subject"}
    assert {d.name for d in model.deterministics} == {"corr_Subject", "b_Subject", "theta", "eta", "mu"}
    assert model.coords["fixef"] == ("(Intercept)", "Days")
    assert model.coords["Subject_coef"] == ("(Intercept)", "Days")
    assert model.coords["Subject_pair"] == ("(Intercept):Days",)
    assert model.coords["Subject"][:3] == ("308", "309", "310") and len(model.coords["Subject"]) == 18
    assert model.coords["theta_name"] == tuple(m.theta.index)
    assert model.named_vars_to_dims["b_Subject"] == ("Subject", "Subject_coef")
    assert model.named_vars_to_dims["beta"] == ("fixef",)


def test_pymc_model_theta_is_lme4s_relative_factor():
    m = _model("sleepstudy_slope_reml")
    model = m.pymc_model
    point = {"beta": m.beta_values, "sigma": m.sigma, **_factor_values(m)}
    theta = pm.do(model, point)["theta"].eval()
    np.testing.assert_allclose(theta, m.theta.to_numpy(), rtol=1e-10, atol=1e-12)


def test_glmm_model_structure():
    g = _model("cbpp_binomial")
    model = g.pymc_model
    assert {rv.name for rv in model.free_RVs} == {"beta", "sd_herd", "u_herd"}
    assert model.coords["fixef"] == ("(Intercept)", "period2", "period3", "period4")
    assert model["y"].owner.op.__class__.__name__.lower().startswith("binomial")


def test_crossed_and_doublebar_terms_get_their_own_names():
    pen = _model("penicillin_crossed")
    assert {rv.name for rv in pen.pymc_model.free_RVs} >= {"u_plate", "u_sample", "sd_plate", "sd_sample"}
    uncorr = _model("sleepstudy_uncorr_reml")
    model = uncorr.pymc_model
    assert {rv.name for rv in model.free_RVs} >= {"sd_Subject", "sd_Subject.1", "u_Subject", "u_Subject.1"}
    assert model.named_vars_to_dims["b_Subject.1"] == ("Subject", "Subject.1_coef")


# --- proofs: the PyMC model is lme4's model --------------------------------------------------


@pytest.mark.parametrize("case_id", ["sleepstudy_slope_ml", "dyestuff_ml", "sleepstudy_doublebar_ml"])
def test_integrating_u_out_of_the_pymc_model_gives_the_ml_deviance(case_id):
    """At the ML estimates, -2 log ∫ p(y | β, σ, b(u)) N(u; 0, I) du is lme4's deviance."""
    m = _model(case_id)
    case = load_case(case_id)
    fixed = {"beta": m.beta_values, "sigma": m.sigma, **_factor_values(m)}
    u_names = [f"u_{label}" for label in m.group_labels()]
    value, _ = laplace_log_integral(m.pymc_model, fixed, u_names, np.zeros(sum(t.q for t in m.compiled.terms)))
    assert -2 * value == pytest.approx(m.criterion_value, rel=1e-10)
    assert -2 * value == pytest.approx(case["minus2loglik"], abs=1e-5)


@pytest.mark.parametrize("case_id", ["sleepstudy_slope_reml", "dyestuff_reml", "pastes_nested"])
def test_integrating_u_and_flat_beta_out_gives_the_reml_criterion(case_id):
    """With β under a flat prior and integrated too, the same integral is lme4's REML criterion."""
    m = _model(case_id)
    case = load_case(case_id)
    model = bm.bayes.pymc_model.build_pymc_model(m, {"beta": Prior("Flat")})
    fixed = {"sigma": m.sigma, **_factor_values(m)}
    names = ["beta"] + [f"u_{label}" for label in m.group_labels()]
    start = np.zeros(m.compiled.p + sum(t.q for t in m.compiled.terms))
    value, mode = laplace_log_integral(model, fixed, names, start)
    assert -2 * value == pytest.approx(m.reml_criterion, rel=1e-10)
    assert -2 * value == pytest.approx(case["reml_criterion"], abs=1e-5)
    np.testing.assert_allclose(mode[: m.compiled.p], m.beta_values, rtol=1e-8)  # the mode in β is the REML β̂


def test_laplace_on_the_pymc_glmm_gives_lme4s_laplace_deviance():
    g = _model("cbpp_binomial")
    case = load_case("cbpp_binomial")
    fixed = {"beta": g.beta_values, **_factor_values(g)}
    value, mode = laplace_log_integral(g.pymc_model, fixed, ["u_herd"], g.glmm_fit.state.u)
    assert -2 * value == pytest.approx(g.criterion_value, rel=1e-9)
    assert -2 * value == pytest.approx(case["minus2loglik"], abs=1e-3)
    np.testing.assert_allclose(mode * g.theta.iloc[0], g.b, atol=1e-7)  # the mode is lme4's conditional mode


def test_laplace_on_the_pymc_poisson_glmm_gives_lme4s_laplace_deviance():
    """grouseticks: Poisson, two crossed-nested scalar terms."""
    g = _model("grouseticks_poisson")
    fixed = {"beta": g.beta_values, **_factor_values(g)}
    names = [f"u_{label}" for label in g.group_labels()]
    value, _ = laplace_log_integral(g.pymc_model, fixed, names, np.zeros(sum(t.q for t in g.compiled.terms)))
    assert -2 * value == pytest.approx(g.criterion_value, rel=1e-9)
    assert -2 * value == pytest.approx(load_case("grouseticks_poisson")["minus2loglik"], abs=2e-3)


# --- the fast sampler's densities are the PyMC model's ----------------------------------------


def _perturbed(m, rng):
    values = _factor_values(m)
    beta = m.beta_values + 0.3 * np.sqrt(np.diag(m.vcov_values)) * rng.standard_normal(m.compiled.p)
    sigma = m.sigma * 1.1 if m.has_scale else None
    Ls = []
    for label, term in zip(m.group_labels(), m.compiled.terms):
        sd = values[f"sd_{label}"] * (1.2 + 0.1 * np.arange(term.k)) + 0.05
        values[f"sd_{label}"] = sd
        Lc = values.get(f"corr_chol_{label}", np.ones((1, 1)))
        Ls.append(sd[:, None] * Lc)
    return beta, sigma, Ls, values


@pytest.mark.parametrize("case_id", ["sleepstudy_slope_reml", "penicillin_crossed", "sleepstudy_uncorr_reml"])
def test_collapsed_lmm_density_is_the_pymc_model_integrated(case_id):
    m = _model(case_id)
    beta, sigma, Ls, values = _perturbed(m, np.random.default_rng(3))
    fixed = {"beta": beta, "sigma": sigma, **values}
    u_names = [f"u_{label}" for label in m.group_labels()]
    expected, u_mode = laplace_log_integral(m.pymc_model, fixed, u_names, np.zeros(sum(t.q for t in m.compiled.terms)))
    lik = CollapsedLmm(m.compiled)
    value, *_ = lik.value_and_grad(beta, sigma, Ls)
    assert value == pytest.approx(expected, rel=1e-11)


@pytest.mark.parametrize("case_id", ["sleepstudy_slope_reml", "penicillin_crossed"])
def test_collapsed_density_with_beta_integrated_is_the_pymc_model_integrated(case_id):
    """The default route integrates β (Normal priors) with u: the PyMC model's (β, u) integral."""
    m = _model(case_id)
    _, sigma, Ls, values = _perturbed(m, np.random.default_rng(4))
    fixed = {"sigma": sigma, **values}
    names = ["beta"] + [f"u_{label}" for label in m.group_labels()]
    start = np.concatenate([m.beta_values, np.zeros(sum(t.q for t in m.compiled.terms))])
    expected, _ = laplace_log_integral(m.pymc_model, fixed, names, start)
    spec = default_priors(m)
    prior = (np.array([b.params["mu"] for b in spec.beta]), np.array([b.params["sigma"] for b in spec.beta]))
    value, *_ = CollapsedLmm(m.compiled, prior).value_and_grad(np.zeros(0), sigma, Ls)
    assert value == pytest.approx(expected, rel=1e-11)


@pytest.mark.parametrize("case_id", ["cbpp_binomial", "grouseticks_poisson", "sleepstudy_slope_reml"])
def test_full_density_is_the_pymc_model_logp(case_id):
    m = _model(case_id)
    rng = np.random.default_rng(5)
    beta, sigma, Ls, values = _perturbed(m, rng)
    u = rng.standard_normal(sum(t.q for t in m.compiled.terms))
    fixed = {"beta": beta, **values, **({"sigma": sigma} if sigma is not None else {})}
    conditioned = pm.do(m.pymc_model, fixed)
    point, start = {}, 0
    for label, term in zip(m.group_labels(), m.compiled.terms):
        point[f"u_{label}"] = u[start : start + term.q].reshape(term.nlevels, term.k)
        start += term.q
    expected = conditioned.compile_logp(jacobian=False)(point)
    value, *_ = FullModel(m).value_and_grad(beta, sigma, Ls, u)
    assert value == pytest.approx(float(expected), rel=1e-12)


def test_quadrature_glmm_density_is_lme4s_agq_objective():
    """ScalarTermGlmm with 25 nodes at the nAGQ = 25 estimates is lme4's AGQ deviance."""
    g = _model("cbpp_binomial_agq25")
    lik = ScalarTermGlmm(g, nodes=25)
    value, *_ = lik.value_and_grad(g.beta_values, None, [np.array([[g.theta.iloc[0]]])])
    # lme4's AGQ deviance is relative to the saturated model (deviance residuals, no binomial constants)
    n, k = lik.data["n"], lik.data["k"]
    saturated = lik.const + np.sum(xlogy(k, k / n) + xlogy(n - k, (n - k) / n))
    assert -2 * (value - saturated) == pytest.approx(g.criterion_value, rel=1e-10)
    assert -2 * (value - saturated) == pytest.approx(load_case("cbpp_binomial_agq25")["minus2loglik"], abs=1e-3)
    more = ScalarTermGlmm(g, nodes=61).value_and_grad(g.beta_values, None, [np.array([[g.theta.iloc[0]]])])[0]
    assert ScalarTermGlmm(g).value_and_grad(g.beta_values, None, [np.array([[g.theta.iloc[0]]])])[0] == pytest.approx(more, abs=1e-8)


@pytest.mark.parametrize("case_id,collapsed", [("sleepstudy_slope_reml", True), ("sleepstudy_slope_reml", False),
                                               ("penicillin_crossed", True), ("cbpp_binomial", True),
                                               ("cbpp_binomial", False), ("grouseticks_poisson", False)])
def test_fast_density_gradient(case_id, collapsed):
    m = _model(case_id)
    post = FastPosterior(m, resolve_priors(m, None), collapsed)
    x = post.start() + 0.05 * np.random.default_rng(1).standard_normal(post.dim)
    _, grad = post.logp_and_grad(x)
    h = 1e-6
    numeric = np.array([(post.logp_and_grad(x + h * e)[0] - post.logp_and_grad(x - h * e)[0]) / (2 * h)
                        for e in np.eye(post.dim)])
    np.testing.assert_allclose(grad, numeric, rtol=2e-5, atol=2e-5 * (1 + np.abs(grad).max()))


# --- the numba kernels (bayesmix.bayes.fastdens) against the NumPy densities ----------------------------

KERNEL_PRIORS = {  # every prior kind the kernels evaluate, and β kept in x (non-Normal β priors)
    "beta": Prior("StudentT", nu=4.0, mu=1.0, sigma=300.0), "sigma": Prior("Gamma", alpha=2.0, beta=0.02),
    "sd": Prior("HalfCauchy", beta=30.0)}
KERNEL_PRIORS_LMM2 = {"beta": Prior("Cauchy", alpha=0.0, beta=200.0), "sigma": Prior("LogNormal", mu=3.0, sigma=2.0),
                      "sd": Prior("InverseGamma", alpha=2.0, beta=10.0)}


def _kernel_cases():
    yield "sleepstudy_slope_reml", None
    yield "sleepstudy_slope_reml", KERNEL_PRIORS
    yield "sleepstudy_slope_ml", KERNEL_PRIORS_LMM2
    yield "sleepstudy_uncorr_reml", {"sd": Prior("HalfStudentT", nu=3.0, sigma=40.0)}
    yield "dyestuff_reml", None
    yield "dyestuff_reml", {"sd": Prior("Exponential", lam=0.02), "beta": Prior("Flat")}
    yield "dyestuff2_singular", None
    yield "penicillin_crossed", None
    yield "cbpp_binomial", None
    yield "cbpp_binomial", {"beta": Prior("Normal", mu=0.5, sigma=3.0), "sd": Prior("HalfNormal", sigma=2.0)}


@pytest.mark.parametrize("case_id,priors", list(_kernel_cases()))
def test_compiled_density_and_gradient_are_the_numpy_ones(case_id, priors):
    m = _model(case_id)
    post = FastPosterior(m, resolve_priors(m, priors), collapsed=True)
    assert post.kernel is not None
    rng = np.random.default_rng(7)
    start = post.start()
    for _ in range(8):
        x = start + 0.4 * rng.standard_normal(post.dim)
        value, grad = post.logp_and_grad(x)
        expected_value, expected_grad = post.numpy_logp_and_grad(x)
        assert np.isfinite(value)
        assert value == pytest.approx(expected_value, rel=1e-10, abs=1e-10)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-10, atol=1e-10 * (1 + np.abs(expected_grad).max()))


def _mixed_structure_lmm():
    """Slopes on g1, a scalar term nested in g1 and one crossed with it, levels in no tidy order: the
    kernel's pattern lists (A's pattern, the factor's envelope columns, C⁻¹'s reach) meet every kind of block."""
    rng = np.random.default_rng(11)
    n = 240
    g1, g2, g3 = rng.integers(0, 9, n), rng.integers(0, 5, n), rng.integers(0, 3, n)
    x = rng.normal(size=n)
    b1, s1, b2, b3 = rng.normal(size=9), 0.5 * rng.normal(size=9), rng.normal(size=5), rng.normal(size=(9, 3))
    data = pd.DataFrame({"g1": [f"a{v}" for v in g1], "g2": [f"b{v}" for v in g2],
                         "g3": [f"c{v}_{w}" for v, w in zip(g1, g3)], "x": x,
                         "y": 2.0 + (0.5 + s1[g1]) * x + b1[g1] + b2[g2] + b3[g1, g3] + rng.normal(size=n)})
    return bm.lmer("y ~ x + (x | g1) + (1 | g2) + (1 | g3)", data)


@pytest.mark.parametrize("priors", [None, KERNEL_PRIORS])
def test_compiled_density_of_a_mixed_structure_is_the_numpy_one(priors):
    m = _mixed_structure_lmm()
    post = FastPosterior(m, resolve_priors(m, priors), collapsed=True)
    assert post.kernel is not None
    rng = np.random.default_rng(5)
    for _ in range(6):
        x = post.start() + 0.3 * rng.standard_normal(post.dim)
        value, grad = post.logp_and_grad(x)
        expected_value, expected_grad = post.numpy_logp_and_grad(x)
        assert value == pytest.approx(expected_value, rel=1e-10, abs=1e-10)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-9, atol=1e-10 * (1 + np.abs(expected_grad).max()))


def test_compiled_poisson_quadrature_density_is_the_numpy_one():
    from conftest import small_poisson_glmm

    g, rng = small_poisson_glmm()
    post = FastPosterior(g, resolve_priors(g, None), collapsed=True)
    assert post.kernel is not None
    for _ in range(5):
        point = post.start() + 0.4 * rng.standard_normal(post.dim)
        value, grad = post.logp_and_grad(point)
        expected_value, expected_grad = post.numpy_logp_and_grad(point)
        assert value == pytest.approx(expected_value, rel=1e-10)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-10, atol=1e-10 * (1 + np.abs(expected_grad).max()))


def test_compiled_density_is_minus_infinity_where_numpy_gives_none():
    for case_id in ("sleepstudy_slope_reml", "cbpp_binomial"):
        m = _model(case_id)
        post = FastPosterior(m, resolve_priors(m, None), collapsed=True)
        x = post.start()
        x[post.p :] = -800.0  # σ and the SDs underflow to zero
        value, grad = post.logp_and_grad(x)
        assert value == -np.inf and np.all(grad == 0.0)
        assert post.numpy_logp_and_grad(x)[0] == -np.inf


class _FixedNormals:
    """A stand-in generator whose standard normals are given."""

    def __init__(self, z):
        self.z = np.asarray(z, dtype=float)

    def standard_normal(self, shape):
        return self.z.reshape(shape).copy()


@pytest.mark.parametrize("case_id,priors", [("sleepstudy_slope_reml", None), ("sleepstudy_slope_reml", KERNEL_PRIORS),
                                            ("dyestuff_reml", None), ("penicillin_crossed", None)])
def test_compiled_draws_of_u_have_the_numpy_conditional(case_id, priors):
    """Same mean (normals zero) and covariance (normals unit vectors) as CollapsedLmm.draw_u."""
    _check_compiled_draws(_model(case_id), priors)


def test_compiled_draws_of_a_mixed_structure_have_the_numpy_conditional():
    _check_compiled_draws(_mixed_structure_lmm(), None)


def _check_compiled_draws(m, priors):
    post = FastPosterior(m, resolve_priors(m, priors), collapsed=True)
    x = post.start() + 0.2 * np.random.default_rng(2).standard_normal(post.dim)
    beta, _, v = post.split(x[None, :])
    sigma, Ls, _ = post.variance.evaluate(v)
    q = post.lik.q
    mean = post.kernel.draw_u_batch(beta, sigma, Ls, _FixedNormals(np.zeros(q)))[0]
    expected = post.lik.draw_u(beta[0], sigma[0], [L[0] for L in Ls], _FixedNormals(np.zeros(q)))
    np.testing.assert_allclose(mean, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())
    noise = np.array([post.kernel.draw_u_batch(beta, sigma, Ls, _FixedNormals(e))[0] - mean for e in np.eye(q)])
    expected_noise = np.array([post.lik.draw_u(beta[0], sigma[0], [L[0] for L in Ls], _FixedNormals(e)) - expected
                               for e in np.eye(q)])
    cov, expected_cov = noise.T @ noise, expected_noise.T @ expected_noise
    np.testing.assert_allclose(cov, expected_cov, rtol=1e-9, atol=1e-10 * np.abs(expected_cov).max())


def test_models_outside_the_kernels_keep_numpy():
    sleep = bm.load_dataset("sleepstudy").assign(Days2=lambda d: d["Days"] ** 2 / 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        three = bm.lmer("Reaction ~ Days + (Days + Days2 | Subject)", sleep)
    assert FastPosterior(three, resolve_priors(three, None), collapsed=True).kernel is None  # a 3x3 term
    g = _model("cbpp_binomial")
    assert FastPosterior(g, resolve_priors(g, None), collapsed=False).kernel is None  # random effects kept
    post = FastPosterior(three, resolve_priors(three, None), collapsed=True)
    x = post.start()
    assert post.logp_and_grad(x)[0] == post.numpy_logp_and_grad(x)[0]


@pytest.mark.parametrize("dist,params,x", [
    ("Normal", {"mu": 1.0, "sigma": 2.0}, [-3.0, 0.5]), ("StudentT", {"nu": 3.0, "mu": 0.5, "sigma": 2.0}, [-1.0, 4.0]),
    ("Cauchy", {"alpha": 0.0, "beta": 2.0}, [1.0, -7.0]), ("HalfNormal", {"sigma": 3.0}, [0.5, 4.0]),
    ("HalfCauchy", {"beta": 2.0}, [0.1, 9.0]), ("HalfStudentT", {"nu": 4.0, "sigma": 2.0}, [0.3, 5.0]),
    ("Exponential", {"lam": 0.7}, [0.2, 3.0]), ("Gamma", {"alpha": 2.0, "beta": 0.5}, [0.4, 6.0]),
    ("InverseGamma", {"alpha": 3.0, "beta": 2.0}, [0.4, 6.0]), ("LogNormal", {"mu": 0.3, "sigma": 0.8}, [0.4, 6.0]),
])
def test_fast_prior_densities_are_pymcs(dist, params, x):
    x = np.array(x)
    expected = pm.logp(getattr(pm, dist).dist(**params), x).eval()
    # PyMC evaluates through numba with fast-math, which costs it ~1e-8 in the constants
    np.testing.assert_allclose(prior_logp(dist, params, x), expected, rtol=1e-7)


def test_correlation_transform_jacobian_and_lkj_density():
    k, eta = 3, 2.0
    y = np.array([0.3, -0.5, 0.8])
    L, logjac = corr_cholesky(y, k)
    np.testing.assert_allclose(np.sum(L**2, axis=1), 1.0)
    rows, cols = np.tril_indices(k, -1)

    def free(v):
        return corr_cholesky(v, k)[0][rows, cols]

    jac = np.array([(free(y + 1e-6 * e) - free(y - 1e-6 * e)) / 2e-6 for e in np.eye(3)]).T
    assert logjac == pytest.approx(np.linalg.slogdet(jac)[1], abs=1e-8)
    lkj = pm.logp(pm.LKJCorr.dist(n=k, eta=eta), L).eval()
    exps = 2 * eta - 2 + k - np.arange(1, k + 1)
    assert lkj_normalizing_constant(eta, k) + np.sum(exps * np.log(np.diag(L))) == pytest.approx(float(lkj), abs=1e-10)


# --- modes: marginal posterior = ML/REML, joint mode collapses -------------------------------


def _lmm_marginal(m, beta, sigma, sd):
    return CollapsedLmm(m.compiled).value_and_grad(beta, sigma, [np.array([[sd]])])


def test_marginal_posterior_mode_is_the_ml_estimate_and_joint_mode_collapses():
    """Dyestuff under flat priors: the mode of p(β, σ, sd | y) (random effects integrated out) is
    lme4's ML fit; the mode of the joint p(β, σ, sd, b | y) sends the batch SD to zero."""
    m = cached_fit("dyestuff_ml").model
    case = load_case("dyestuff_ml")

    def neg_marginal(par):
        return -_lmm_marginal(m, par[:1], np.exp(par[1]), np.exp(par[2]))[0]

    start = np.array([np.mean(m.compiled.y), np.log(np.std(m.compiled.y)), np.log(np.std(m.compiled.y))])
    fit = minimize(neg_marginal, start, method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000})
    se = case["se"][0]
    assert abs(fit.x[0] - case["fixef"][0]) < 1e-3 * se
    assert np.exp(fit.x[1]) == pytest.approx(case["sigma"], rel=2e-3)
    batch_sd = case["varcorr"][0]["sdcor"]
    assert np.exp(fit.x[2]) == pytest.approx(batch_sd, rel=2e-3)
    assert 2 * fit.fun == pytest.approx(case["minus2loglik"], abs=1e-6)

    # the joint density in the centred random effects b = sd·u: p(y | β, σ, b) N(b; 0, sd²)
    full = FullModel(m)
    nlevels = m.compiled.terms[0].nlevels

    def neg_joint(par):
        beta, sigma, sd, b = par[:1], np.exp(par[1]), np.exp(par[2]), par[3:]
        value = full.value_and_grad(beta, sigma, [np.array([[sd]])], b / sd)[0]
        return -(value - nlevels * np.log(sd))  # Jacobian from u to b

    at_ml = np.concatenate([fit.x, m.b])
    joint = minimize(neg_joint, at_ml, method="L-BFGS-B", options={"maxiter": 5000})
    assert np.exp(joint.x[2]) < 0.01 * batch_sd  # the variance collapses towards zero ...
    assert -joint.fun > -neg_joint(at_ml) + 10  # ... where the joint density is far higher than at the ML fit


def test_marginal_posterior_mode_with_beta_integrated_is_the_reml_estimate():
    m = cached_fit("dyestuff_reml").model
    case = load_case("dyestuff_reml")
    p = m.compiled.p

    def beta_integrated(par):
        sigma, sd = np.exp(par[0]), np.exp(par[1])
        value, grad, *_ = _lmm_marginal(m, np.zeros(p), sigma, sd)
        # ℓ is quadratic in β: its Hessian from the (linear) gradient, one Newton step to the maximum
        hess = np.array([(_lmm_marginal(m, e, sigma, sd)[1] - grad) for e in np.eye(p)]).T
        beta = -np.linalg.solve(hess, grad)
        top = _lmm_marginal(m, beta, sigma, sd)[0]
        return top + 0.5 * p * np.log(2 * np.pi) - 0.5 * np.linalg.slogdet(-hess)[1]

    start = np.log([np.std(m.compiled.y), np.std(m.compiled.y)])
    fit = minimize(lambda par: -beta_integrated(par), start, method="Nelder-Mead",
                   options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000})
    assert np.exp(fit.x[0]) == pytest.approx(case["sigma"], rel=2e-3)
    assert np.exp(fit.x[1]) == pytest.approx(case["varcorr"][0]["sdcor"], rel=2e-3)
    assert 2 * fit.fun == pytest.approx(case["reml_criterion"], abs=1e-6)


# --- sampling ------------------------------------------------------------------------------


def _check_posterior(m, post, rhat_max=1.05):
    table = bm.compare(m, post)
    assert table["r_hat"].max() < rhat_max
    assert int(post["sample_stats"]["diverging"].sum()) == 0
    fixed = table[table["kind"] == "fixed"]
    assert np.all(np.abs(fixed["mean"] - fixed["estimate"]) < 0.5 * fixed["sd"])
    return table


def test_sample_sleepstudy_collapsed():
    m = _model("sleepstudy_slope_reml")
    post = m.sample(draws=400, tune=400, chains=2, random_seed=11, progressbar=False)
    p = post["posterior"]
    assert set(p.data_vars) == {"beta", "sigma", "sd_Subject", "corr_Subject", "b_Subject", "theta",
                                "u_Subject", "corr_chol_Subject"}  # PyMC's free variables too (issue 13)
    assert p["b_Subject"].dims == ("chain", "draw", "Subject", "Subject_coef")
    assert p["b_Subject"].shape == (2, 400, 18, 2)
    assert list(p["beta"].coords["fixef"].values) == ["(Intercept)", "Days"]
    assert "HalfNormal" in p.attrs["priors"] and "LKJCorr(eta=1)" in p.attrs["priors"]
    assert "integrated out analytically" in p.attrs["route"]
    table = _check_posterior(m, post)
    assert list(table.columns) == ["kind", "estimate", "se", "wald_2.5%", "wald_97.5%", "mean", "sd",
                                   "hdi94_lower", "hdi94_upper", "r_hat", "ess_bulk"]
    assert list(table.index) == ["beta[(Intercept)]", "beta[Days]", "sd_Subject[(Intercept)]", "sd_Subject[Days]",
                                 "corr_Subject[(Intercept):Days]", "sigma"]
    # the random effects' posterior means sit near lme4's conditional modes (shrinkage alike)
    b_mean = p["b_Subject"].mean(("chain", "draw")).values
    b_sd = p["b_Subject"].std(("chain", "draw")).values
    assert np.all(np.abs(b_mean - m.ranef["Subject"].to_numpy()) < 0.5 * b_sd)


def test_sample_with_numpyro_where_installed():
    """The JAX route (optional: numpyro is not a dependency, and CI does not install it)."""
    pytest.importorskip("numpyro")
    m = _model("dyestuff_reml")
    post = m.sample(sampler="numpyro", draws=200, tune=200, chains=2, random_seed=3, progressbar=False)
    p = post["posterior"]
    assert p.attrs["route"].startswith("numpyro NUTS on the PyMC model")
    assert set(p.data_vars) == {"beta", "sigma", "sd_Batch", "b_Batch", "theta", "u_Batch"}
    assert p["b_Batch"].shape == (2, 200, 6, 1)
    table = bm.compare(m, post)
    assert abs(table.loc["beta[(Intercept)]", "mean"] - m.fixef["(Intercept)"]) < 0.5 * table.loc["beta[(Intercept)]", "sd"]


def test_sample_is_reproducible_with_a_seed():
    m = _model("dyestuff_reml")
    a = m.sample(draws=50, tune=50, chains=1, random_seed=3, progressbar=False)
    b = m.sample(draws=50, tune=50, chains=1, random_seed=3, progressbar=False)
    np.testing.assert_array_equal(a["posterior"]["b_Batch"].values, b["posterior"]["b_Batch"].values)


def test_chains_in_parallel_threads_or_one_at_a_time_give_the_same_draws(monkeypatch):
    """sample() picks nutpie's thread count from how long a density call takes; the draws must not depend on it."""
    from bayesmix.bayes import sampling

    m = _model("dyestuff_reml")
    draws = []
    for cores in (1, 2):
        monkeypatch.setattr(sampling, "_parallel_chains", lambda post, chains, cores=cores: cores)
        draws.append(m.sample(draws=50, tune=50, chains=2, random_seed=4, progressbar=False)["posterior"])
    for name in ("beta", "sigma", "b_Batch"):
        np.testing.assert_array_equal(draws[0][name].values, draws[1][name].values)


def test_sample_cbpp_quadrature_and_full():
    g = _model("cbpp_binomial")
    post = g.sample(draws=400, tune=400, chains=2, random_seed=5, progressbar=False)
    assert "quadrature" in post["posterior"].attrs["route"]
    assert "sigma" not in post["posterior"]
    table = _check_posterior(g, post)
    assert list(table["kind"]) == ["fixed"] * 4 + ["sd"]
    full = g.sample(draws=300, tune=300, chains=2, random_seed=5, progressbar=False, collapse=False)
    assert "non-centred" in full["posterior"].attrs["route"]
    _check_posterior(g, full, rhat_max=1.1)


def test_user_priors_reach_the_posterior():
    m = _model("sleepstudy_slope_reml")
    priors = {"sd_Subject[Days]": Prior("Exponential", lam=0.1), "beta": Prior("StudentT", nu=3, sigma=500)}
    post = m.sample(draws=100, tune=100, chains=1, random_seed=2, progressbar=False, priors=priors)
    attrs = post["posterior"].attrs
    assert "Exponential(lam=0.1)" in attrs["priors"] and "StudentT(nu=3, sigma=500)" in attrs["priors"]


def _bayes_checks():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bayes_checks.py"
    spec = importlib.util.spec_from_file_location("bayes_checks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("case_id", _bayes_checks().LMM_CASES + _bayes_checks().GLMM_CASES + ["instEval_crossed_ml"])
def test_default_sampling_of_reference_cases(case_id):
    """R-hat < 1.01, no divergences, fixed effects' posterior means within 0.5 SD (benchmarks/bayes_checks.py;
    InstEval takes 40 minutes on two cores)."""
    result = _bayes_checks().check_case(case_id)
    assert result["ok"], result


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lmm", "glmm"])
def test_simulation_based_calibration(kind):
    result = _bayes_checks().sbc(kind, simulations=100)
    assert result["ok"], result


@pytest.mark.slow
def test_sample_with_pymcs_sampler():
    """The PyMC route (compiles the model with numba first: slow)."""
    m = _model("dyestuff_reml")
    post = m.sample(draws=300, tune=300, chains=2, random_seed=4, progressbar=False, sampler="pymc")
    assert post["posterior"].attrs["sampler"] == "pymc"
    _check_posterior(m, post, rhat_max=1.1)


# --- priors --------------------------------------------------------------------------------


def test_default_priors_are_documented_and_scaled():
    m = _model("sleepstudy_slope_reml")
    spec = default_priors(m)
    sy = np.std(m.compiled.y, ddof=1)
    assert spec.sigma == Prior("HalfNormal", sigma=100 * sy)
    days_sd = np.std(m.compiled.X[:, 1], ddof=1)
    assert spec.beta[1] == Prior("Normal", mu=0.0, sigma=100 * sy / days_sd)
    assert spec.beta[0] == Prior("Normal", mu=0.0, sigma=100 * (abs(np.mean(m.compiled.y)) + sy))
    assert spec.sd["Subject"][0] == Prior("HalfNormal", sigma=100 * sy)
    assert spec.corr["Subject"] == Prior("LKJCorr", eta=1.0)
    assert "sd_Subject[Days]" in prior_names(m) and "corr_Subject" in prior_names(m)


def test_most_specific_prior_wins():
    m = _model("sleepstudy_slope_reml")
    spec = resolve_priors(m, {"sd": Prior("HalfCauchy", beta=5), "sd_Subject[Days]": Prior("Exponential", lam=1)})
    assert spec.sd["Subject"] == [Prior("HalfCauchy", beta=5), Prior("Exponential", lam=1)]
    model = bm.bayes.pymc_model.build_pymc_model(m, spec)
    assert {"sd_Subject[(Intercept)]", "sd_Subject[Days]"} <= {rv.name for rv in model.free_RVs}


@pytest.mark.parametrize("priors,match", [
    ({"sd_Patient": Prior("HalfNormal", sigma=1)}, "unknown prior name 'sd_Patient'.*sd_Subject"),
    ({"beta[Dayz]": Prior("Normal", sigma=1)}, "unknown prior name 'beta\\[Dayz\\]'"),
    ({"sigma": Prior("HalfNormal", sigma=-2)}, "impossible parameters.*sigma=-2 must be positive"),
    ({"sd": Prior("Normal", sigma=1)}, "mass on negative values"),
    ({"corr": Prior("HalfNormal", sigma=1)}, "correlation priors are LKJCorr"),
    ({"corr_Subject": Prior("LKJCorr", eta=0)}, "eta=0 must be positive"),
    ({"beta": Prior("Normal", scale=3)}, "Normal has no parameter scale"),
    ({"beta": Prior("Nonsense", a=1)}, "'Nonsense' is not a PyMC distribution"),
    ({"beta": Prior("TruncatedNormal", mu=0, sigma=-1)}, "impossible parameters"),
    ({"beta": 3.0}, "give a bayesmix.Prior"),
])
def test_bad_priors_are_rejected_clearly(priors, match):
    m = _model("sleepstudy_slope_reml")
    with pytest.raises(PriorError, match=match):
        m.sample(draws=10, tune=10, chains=1, priors=priors, progressbar=False)


def test_prior_parameters_must_be_numbers():
    with pytest.raises(PriorError, match="sigma='wide' is not a number"):
        Prior("HalfNormal", sigma="wide")


# --- bad input -----------------------------------------------------------------------------


def test_sampling_a_failed_fit_is_refused():
    m = copy.copy(_model("dyestuff_reml"))
    m.converged = False
    with pytest.raises(bm.SamplingError, match="failed to fit"):
        m.sample(draws=10, tune=10, chains=1)


@pytest.mark.parametrize("kwargs,match", [
    ({"sampler": "stan"}, "unknown sampler 'stan'"),
    ({"draws": 0}, "draws must be a positive integer"),
    ({"chains": 1.5}, "chains must be a positive integer"),
    ({"draws": True}, "draws must be a positive integer, got True"),
    ({"collapse": True, "sampler": "pymc"}, "collapse=True is available with sampler='nutpie'"),
])
def test_bad_sampling_arguments(kwargs, match):
    m = _model("dyestuff_reml")
    with pytest.raises(ValueError, match=match):
        m.sample(**{"draws": 10, "tune": 10, "chains": 1, **kwargs})


def test_collapse_refused_for_glmm_with_several_terms():
    g = _model("grouseticks_poisson")
    with pytest.raises(ValueError, match="single scalar random-effects term"):
        g.sample(draws=10, tune=10, chains=1, collapse=True)


def test_compare_rejects_a_foreign_posterior():
    m = _model("dyestuff_reml")
    post = m.sample(draws=20, tune=20, chains=1, random_seed=1, progressbar=False)
    with pytest.raises(ValueError, match="has no sd_Subject"):
        bm.compare(_model("sleepstudy_intercept_reml"), post)


# --- plots and imports -----------------------------------------------------------------------


def test_plots_have_labelled_axes():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    m = _model("sleepstudy_slope_reml")
    post = m.sample(draws=100, tune=100, chains=2, random_seed=1, progressbar=False)
    fig = bm.plots.forest(m, post)
    labels = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels()]
    assert {"(Intercept)", "Days", "SD Subject: Days", "σ (residual)", "corr Subject: (Intercept):Days"} <= set(labels)
    assert fig.axes[-1].get_xlabel() == "value"
    cat = bm.plots.caterpillar(m, post)
    assert [ax.get_xlabel() for ax in cat.axes] == ["random effect: (Intercept)", "random effect: Days"]
    assert cat.axes[0].get_ylabel() == "level of Subject"
    with pytest.raises(ValueError, match="no random-effects term 'herd'"):
        bm.plots.caterpillar(m, post, term="herd")
    import matplotlib.pyplot as plt

    plt.close("all")


def test_import_bayesmix_does_not_import_pymc_or_arviz():
    code = ("import sys, bayesmix; heavy = [m for m in ('pymc', 'arviz', 'arviz_stats', 'pytensor', 'matplotlib', "
            "'nutpie', 'xarray') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_warnings_do_not_leak_from_sampling():
    m = _model("dyestuff_reml")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.sample(draws=30, tune=30, chains=1, random_seed=1, progressbar=False)
