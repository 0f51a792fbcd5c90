"""The pieces that make glmer's optimization cheaper (issue 14), checked on exact identities.

The fitted numbers themselves are checked against lme4 by test_glmer_reference.py and
test_trust.py; here: the mode prediction is exact for affine modes, PIRLS's quadratic-rate
stop, the Newton polish and the β step on quadratics (exact minimizers, evaluation counts),
and the aic shortcut equal to the family's aic.
"""

from __future__ import annotations

import numpy as np
import pytest

import bayesmix as bm
from bayesmix.engine.families import get_family
from bayesmix.engine.glmm import GlmmObjective, _beta_newton_step
from bayesmix.engine.glmm_polish import _onto_near_bounds, newton_polish
from bayesmix.engine.optimize import OptimizeResult
from bayesmix.engine.pirls_warm import ModeMemory, NewtonRate
from bayesmix.spec.model import compile_model


def test_mode_memory_predicts_affine_modes_exactly():
    rng = np.random.default_rng(3)
    A, b = rng.normal(size=(40, 3)), rng.normal(size=40)
    memory = ModeMemory(np.array([1.0, 10.0, 0.5]))
    for _ in range(12):
        par = rng.normal(size=3)
        memory.remember(par, A @ par + b)
    query = rng.normal(size=3)
    np.testing.assert_allclose(memory.predict(query), A @ query + b, rtol=1e-10, atol=1e-10)


def test_mode_memory_returns_the_modes_of_a_point_seen_before():
    """An optimizer may evaluate a point twice: a zero distance must not turn the weights into NaN."""
    rng = np.random.default_rng(4)
    memory = ModeMemory(np.ones(3))
    pars = [rng.normal(size=3) for _ in range(10)]
    for par in pars:
        memory.remember(par, np.sin(par))  # not affine: a fit would not reproduce it exactly
    np.testing.assert_array_equal(memory.predict(pars[6].copy()), np.sin(pars[6]))


def test_mode_memory_keeps_a_stencils_worth_of_points():
    memory = ModeMemory(np.ones(6))
    for i in range(40):
        memory.remember(np.full(6, float(i)), np.array([float(i)]))
    assert len(memory.pars) == 3 * 6 + 4  # centre, 2m axis points and more of a Hessian stencil
    assert memory.pars[0][0] == 40 - 22  # the oldest are forgotten first


def test_newton_rate_stops_when_the_next_step_would_be_negligible():
    rate = NewtonRate()
    assert not rate.settled(1e-12)  # nothing observed yet: no prediction
    for du in (1e-2, 1e-3, 1e-4, 1e-5):
        rate.observe(du, 0.2 * du**2, full_step=True)  # C = 0.2
    rate.observe(1e-3, 1.0, full_step=False)  # a halved step says nothing about C
    assert rate.settled(5e-6)  # next step ~ 0.2 * 2.5e-11 = 5e-12 < 1e-11
    assert not rate.settled(1e-5)  # next step ~ 2e-11
    assert rate.settled(1e-5, loose=100.0)


def _quadratic(H, x_star, f_star=3.0):
    calls = []

    def f(x):
        calls.append(np.array(x))
        d = np.asarray(x) - x_star
        return f_star + 0.5 * d @ H @ d

    return f, calls


def test_newton_polish_lands_on_a_quadratics_minimum_where_its_gradient_was_taken():
    H = np.array([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]])
    x_star = np.array([0.3, -0.2, 0.7])
    f, calls = _quadratic(H, x_star)
    x0 = x_star + np.array([0.05, -0.03, 0.02])
    start = OptimizeResult(x0, f(x0), 10, True, "start")
    calls.clear()
    res = newton_polish(f, start, np.full(3, -np.inf))
    np.testing.assert_allclose(res.x, x_star, atol=1e-9)
    np.testing.assert_allclose(res.hessian, H, rtol=1e-6, atol=1e-8)  # central differences are exact on quadratics
    assert np.array_equal(res.gradient_at, res.x)  # the convergence check needs no new gradient
    np.testing.assert_allclose(res.gradient, 0.0, atol=1e-8)
    m = 3
    assert len(calls) == m * (m + 1) + 1 + 2 * m  # stencil, one step, the gradient there
    assert res.nfev == 10 + len(calls)


def test_newton_polish_keeps_a_parameter_at_its_bound():
    H = np.diag([2.0, 5.0])
    f, _ = _quadratic(H, np.array([-0.5, 1.0]))  # the unconstrained optimum lies below the bound 0
    x0 = np.array([0.0, 1.1])
    res = newton_polish(f, OptimizeResult(x0, f(x0), 0, True, "start"), np.array([0.0, -np.inf]))
    assert res.x[0] == 0.0
    assert res.x[1] == pytest.approx(1.0, abs=1e-9)
    assert np.isnan(res.gradient[0]) and res.hessian_free.tolist() == [False, True]


def test_a_theta_just_off_its_bound_is_put_on_it_only_where_no_worse():
    """Flat in θ² near 0 (a singular optimum): the bound is taken; with the optimum inside it is refused."""
    lower = np.array([0.0, 0.0, -np.inf])

    def counted(f):
        def g(x):
            g.calls += 1
            return f(x)
        g.calls = 0
        return g

    singular = counted(lambda x: (x[0] ** 2 + 0.3) ** 2 + (x[1] - 1.0) ** 2 + x[2] ** 2)  # optimum at θ0 = 0
    x0 = np.array([4e-3, 0.5, 0.1])
    x, fx = _onto_near_bounds(singular, x0, singular(x0), lower)
    np.testing.assert_array_equal(x, [0.0, 0.5, 0.1])
    assert fx < singular(x0) and singular.calls == 3  # start, the one trial, and this check

    inside = counted(lambda x: (x[0] ** 2 - 0.0025) ** 2 * 1e6 + (x[1] - 1.0) ** 2)  # optimum at θ0 = 0.05
    x0 = np.array([8e-3, 0.5, 0.0])
    f0 = inside(x0)
    x, fx = _onto_near_bounds(inside, x0, f0, lower)
    np.testing.assert_array_equal(x, x0)
    assert fx == f0 and inside.calls == 2  # start and the one trial


def test_beta_newton_step_solves_a_separable_quadratic():
    H = np.diag([7.0, 2.0, 2.5, 1.5])  # θ (2) then whitened β (2)
    x_star = np.array([0.6, 0.1, 1.9, -0.4])
    f, calls = _quadratic(H, x_star)
    x0 = np.array([0.6, 0.1, 0.0, 0.0])
    x, used = _beta_newton_step(f, x0, ntheta=2)
    np.testing.assert_allclose(x, x_star, atol=1e-12)
    assert used == len(calls) == 2 + 2 * 2


@pytest.mark.parametrize("family, formula", [
    ("binomial", "cbind(incidence, size - incidence) ~ period + (1 | herd)"),
    ("poisson", "incidence ~ period + (1 | herd)"),
])
def test_aic_shortcut_is_the_familys_aic(family, formula):
    data = bm.load_dataset("cbpp")
    fam = get_family(family)
    obj = GlmmObjective(compile_model(formula, data, binomial_response=fam.response_is_probability), fam)
    assert obj._aic_offset is not None
    rng = np.random.default_rng(1)
    mu = rng.uniform(0.05, 0.6, len(obj.y)) * (1.0 if family == "binomial" else 5.0)
    dev = fam.dev_resids(obj.y, mu, obj.prior_weights).sum()
    assert dev + obj._aic_offset == pytest.approx(fam.aic(obj.y, obj.n_trials, mu, obj.prior_weights, dev), rel=1e-12)


def test_aic_shortcut_is_refused_where_the_aic_depends_on_the_mean_otherwise():
    data = bm.load_dataset("cbpp").assign(y=lambda d: d["size"] / 10.0 + d.incidence)
    obj = GlmmObjective(compile_model("y ~ period + (1 | herd)", data), get_family("Gamma"))
    assert obj._aic_offset is None  # Gamma's aic estimates a dispersion from the deviance
