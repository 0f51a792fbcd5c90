"""The exact gradient of the profiled deviance, and the gradient-based search that uses it (issue 14).

engine/dense.py (small systems) and engine/gradient.py (the blocked factor) compute
∂criterion/∂θ analytically; both must equal differences of the *textbook* deviance (explicit
Z, Λ, X: test_engine_paths._textbook_deviance), on every evaluation path, REML and ML,
with weights.  The search without bounds relies on the criterion being even in each column
of a relative covariance factor (spec.terms.canonical_theta), also checked here.
"""

import numpy as np
import pytest
from test_engine_paths import CASES, _data, _textbook_deviance

import bayesmix as bm
from bayesmix.engine.lmm import ProfiledDeviance
from bayesmix.engine.optimize import minimize_bounded
from bayesmix.spec.model import compile_model
from bayesmix.spec.terms import canonical_theta


def _richardson_gradient(f, x, h=1e-4):
    """Five-point central differences (error O(h⁴))."""
    g = np.zeros(len(x))
    for i in range(len(x)):
        e = np.zeros(len(x))
        e[i] = h
        g[i] = (-f(x + 2 * e) + 8 * f(x + e) - 8 * f(x - e) + f(x - 2 * e)) / (12 * h)
    return g


def _theta(c, seed=5):
    """A θ away from the start, with nonzero correlations, inside the bounds."""
    rng = np.random.default_rng(seed)
    start = c.theta_start()
    return np.where(start == 1, rng.uniform(0.4, 1.6, len(start)), rng.uniform(-0.4, 0.4, len(start)))


def _deviances(c, reml):
    """The deviance on its own path, and one forced onto the blocked path."""
    own = ProfiledDeviance(c.terms, c.X, c.y, c.weights, reml=reml)
    blocked = ProfiledDeviance(c.terms, c.X, c.y, c.weights, reml=reml)
    blocked._dense, blocked._dense_built = None, True
    return own, blocked


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("reml", [True, False])
def test_gradient_equals_differences_of_the_textbook_deviance(name, reml):
    formula, data, _ = CASES[name]
    c = compile_model(formula, data)
    theta = _theta(c)
    expected = _richardson_gradient(lambda t: _textbook_deviance(c, t, reml), theta)
    for dev in _deviances(c, reml):
        value, grad = dev.value_and_gradient(theta)
        assert value == pytest.approx(_textbook_deviance(c, theta, reml), rel=1e-10)
        np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_gradient_with_weights_and_a_singular_theta():
    data = _data(20, 20, 10)
    data["w"] = np.random.default_rng(2).uniform(0.5, 2.0, len(data))
    c = compile_model("y ~ 1 + (1 + x | g1) + (1 + x2 | g2)", data, weights=data["w"].to_numpy())
    theta = np.array([0.8, 0.2, 0.0, 0.5, -0.3, 0.4])  # a zero variance: a singular fit's boundary
    for reml in (True, False):
        dense, blocked = _deviances(c, reml)
        f = dense  # the textbook deviance has no weights: compare the two paths with differences of ours
        expected = _richardson_gradient(f, theta)
        for dev in (dense, blocked):
            np.testing.assert_allclose(dev.value_and_gradient(theta)[1], expected, rtol=1e-6,
                                       atol=1e-6 * np.abs(expected).max())


def test_column_sign_flips_leave_the_deviance_unchanged():
    formula, data, _ = CASES["two_slopes"]
    c = compile_model(formula, data)
    dev = ProfiledDeviance(c.terms, c.X, c.y, c.weights, reml=True)
    theta = _theta(c)
    flipped = theta.copy()
    # θ per 2 x 2 term: T[0,0], T[1,0], T[1,1] (lower triangle, column-major)
    flipped[2] *= -1  # the second column of the first term's T: its diagonal only
    flipped[[3, 4]] *= -1  # the first column of the second term's T: diagonal and the entry below
    assert dev(flipped) == pytest.approx(dev(theta), rel=1e-13)
    np.testing.assert_array_equal(canonical_theta(c.terms, flipped), theta)


def test_an_unbounded_search_does_not_stick_on_a_variance_bound():
    """On θ_jj = 0 the gradient's jj component vanishes (the criterion depends on θ_jj² there):
    L-BFGS-B with the bound lands there on Pixel-shaped data and stays, 5 units above the optimum.
    The search bayesmix runs (unbounded, folded) ends where BOBYQA does, or lower."""
    formula, data, _ = CASES["pixel_like"]
    c = compile_model(formula, data)
    dev = ProfiledDeviance(c.terms, c.X, c.y, c.weights, reml=True)
    lower = c.theta_lower()
    by_gradient = minimize_bounded(dev, c.theta_start(), lower, value_and_gradient=dev.value_and_gradient,
                                   fold=lambda t: canonical_theta(c.terms, t))
    by_bobyqa = minimize_bounded(dev, c.theta_start(), lower)
    assert by_gradient.fun <= by_bobyqa.fun + 1e-8
    assert np.all(by_gradient.x >= lower)


def test_small_lmm_fits_take_the_gradient_path_and_few_evaluations():
    """BOBYQA took 59 evaluations here; lme4 1.1-31 reports REML criterion 1743.62827195995
    (tests/reference/issues/hard_fits.json), which the fit must not exceed."""
    m = bm.lmer("Reaction ~ Days + (Days | Subject)", bm.load_dataset("sleepstudy"))
    assert m.optsum.optimizer == "L-BFGS-B" and m.optsum.feval < 45
    assert m.criterion_value <= 1743.62827195995 + 1e-9


def test_blocked_gradient_of_a_single_term_equals_the_dense_one():
    """No terms after the first (no Schur rows for other random effects): both paths agree."""
    c = compile_model("Reaction ~ Days + (Days | Subject)", bm.load_dataset("sleepstudy"))
    theta = np.array([0.9, -0.2, 0.3])
    for reml in (True, False):
        dense, blocked = _deviances(c, reml)
        v1, g1 = dense.value_and_gradient(theta)
        v2, g2 = blocked.value_and_gradient(theta)
        assert v2 == pytest.approx(v1, rel=1e-12)
        np.testing.assert_allclose(g2, g1, rtol=1e-9)
