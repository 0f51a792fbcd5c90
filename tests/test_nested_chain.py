"""engine.nested: PIRLS's systems for nested scalar terms, eliminated on their tree, against engine.lmm's
blocked Cholesky.

The two are the same factorization of ``[ZΛ X r]'W[ZΛ X r] + diag(I, 0)`` computed along different
routes, so the log-determinant, the solution and the fixed effects' covariance agree to rounding.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm
from bayesmix.engine.families import get_family
from bayesmix.engine.glmm import GlmmObjective, fit_glmm
from bayesmix.engine.lmm import ProfiledDeviance
from bayesmix.engine.nested import NestedChain
from bayesmix.engine.weighted_system import WeightedSystem
from bayesmix.spec.model import compile_model


def _nested_data(rng, n=300):
    """Plots in sites in regions (levels shuffled, so that no term's codes are sorted), x, a count response."""
    region = rng.integers(0, 5, n)
    site = region * 4 + rng.integers(0, 4, n)
    plot = site * 3 + rng.integers(0, 3, n)
    relabel = {name: rng.permutation(size) for name, size in (("region", 5), ("site", 20), ("plot", 60))}
    x = rng.normal(size=n)
    eta = 0.5 + 0.3 * x + rng.normal(0, 0.4, 5)[region] + rng.normal(0, 0.3, 20)[site] + rng.normal(0, 0.2, 60)[plot]
    return pd.DataFrame({"region": [f"r{v}" for v in relabel["region"][region]],
                         "site": [f"s{v}" for v in relabel["site"][site]],
                         "plot": [f"p{v}" for v in relabel["plot"][plot]],
                         "x": x, "f": rng.choice(["a", "b", "c"], n), "y": rng.poisson(np.exp(eta))})


FORMULAS = [
    "y ~ x + f + (1 | region) + (1 | site) + (1 | plot)",
    "y ~ x + (1 | region/site)",  # lme4's nesting syntax: (1 | region) + (1 | region:site)
    "y ~ x + (1 | region) + (1 | site) + (0 + x | site) + (1 | plot)",  # equal levels, a covariate column
    "y ~ 1 + (1 | site) + (1 | plot)",
]


@pytest.mark.parametrize("formula", FORMULAS)
@pytest.mark.parametrize("with_x", [True, False])
def test_nested_factor_is_the_blocked_cholesky(formula, with_x):
    rng = np.random.default_rng(21)
    c = compile_model(formula, _nested_data(rng))
    chain = NestedChain.of(c.terms)
    assert chain is not None
    X = c.X if with_x else np.zeros((c.n, 0))
    for trial in range(3):
        theta = rng.uniform(0.2, 2.0, c.ntheta)
        theta[1] = 0.0 if trial == 2 else theta[1]  # a term on its bound
        w = rng.uniform(0.1, 3.0, c.n)
        response = rng.normal(size=c.n)
        f = chain.factor(theta, w, X, response)
        dev = ProfiledDeviance(c.terms, X, None, None, reml=False, cross=WeightedSystem(c).cross(w, X, response))
        g = dev.factorize(theta)
        assert f.ldL2 == pytest.approx(g.ldL2, rel=1e-12)
        beta, u = chain.solve(f)
        beta_g, u_g = dev.solve(g)
        np.testing.assert_allclose(u, u_g, rtol=1e-9, atol=1e-11 * np.abs(u_g).max())
        np.testing.assert_allclose(beta, beta_g, rtol=1e-9, atol=1e-12)
        if with_x:
            np.testing.assert_allclose(chain.fixef_covariance_unscaled(f), dev.fixef_covariance_unscaled(g),
                                       rtol=1e-9)


@pytest.mark.parametrize("formula", [
    "y ~ x + (1 | site) + (1 | f)",  # crossed
    "y ~ x + (1 + x | site) + (1 | plot)",  # a vector-valued term
    "y ~ x + (1 | plot)",  # one term: the general route is short already
])
def test_the_chain_applies_only_to_nested_scalar_terms(formula):
    c = compile_model(formula, _nested_data(np.random.default_rng(3)))
    assert NestedChain.of(c.terms) is None


def test_glmer_on_a_nested_chain_matches_the_general_route():
    """The whole fit through the chain and through engine.lmm alone: same optimum, same covariance;
    the result's factorization (conditional variances) is engine.lmm's either way."""
    data = _nested_data(np.random.default_rng(8), n=400)
    formula = "y ~ x + (1 | region) + (1 | site) + (1 | plot)"
    m = bm.glmer(formula, data, family="poisson")
    assert m.glmm_fit.objective.nested is not None
    obj = GlmmObjective(compile_model(formula, data), get_family("poisson"))
    obj.nested = None
    general = fit_glmm(obj.compiled, obj.family, objective=obj)
    assert m.glmm_fit.criterion == pytest.approx(general.criterion, abs=1e-7)
    np.testing.assert_allclose(m.glmm_fit.theta, general.theta, atol=2e-4)
    np.testing.assert_allclose(m.glmm_fit.beta, general.beta, atol=2e-4)
    np.testing.assert_allclose(m.se.to_numpy(), np.sqrt(np.diag(general.vcov)), rtol=2e-3)
    assert isinstance(m.glmm_fit.state.deviance_obj, ProfiledDeviance)
    from bayesmix.results.lmer import conditional_variances

    expected = conditional_variances(general.state.factorization, m.compiled.terms, m.group_labels(),
                                     m.relative_factors(), 1.0)
    for name, condvar in m.ranef_condvar().items():
        np.testing.assert_allclose(condvar, expected[name], rtol=2e-3)
