"""The blocked collapsed LMM density (many random effects) against the dense one, and its place in sampling.

The dense :class:`CollapsedLmm` is checked against the PyMC model's own log density in
test_bayes.py; here the blocked one must give the same value, gradient and conditional
draws to rounding, on crossed, nested and single-term models, with β integrated out and
with β sampled.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm
from bayesmix.bayes.densities import CollapsedLmm
from bayesmix.bayes.posterior import FastPosterior
from bayesmix.bayes.blockedlmm import BlockedCollapsedLmm, applicable
from bayesmix.bayes.pymc_model import resolve_priors

pytest.importorskip("numba")

MODELS = {
    "crossed": ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
    "nested": ("Pastes", "strength ~ 1 + (1 | batch/cask)"),
    "single": ("Dyestuff", "Yield ~ 1 + (1 | Batch)"),
    "uncorrelated": ("sleepstudy", "Reaction ~ Days + (Days || Subject)"),
    "correlated": ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
    "vector_first": ("many_groups", "y ~ x + (x | student) + (1 | rater)"),
    "vector_rest": ("many_groups", "y ~ x + (1 | student) + (x | rater)"),
}


def _fit(name):
    dataset, formula = MODELS[name]
    data = _many_groups().iloc[:240] if dataset == "many_groups" else bm.load_dataset(dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bm.lmer(formula, data)


def _arguments(m, integrate_beta: bool, seed: int = 1):
    rng = np.random.default_rng(seed)
    c = m.compiled
    Ls = []
    for t in c.terms:  # a random lower-triangular factor with a positive diagonal
        L = np.tril(rng.uniform(-1.0, 1.0, (t.k, t.k)))
        L[np.diag_indices(t.k)] = rng.uniform(0.3, 3.0, t.k)
        Ls.append(L)
    beta_prior = (rng.normal(size=c.p), rng.uniform(5.0, 50.0, c.p)) if integrate_beta else None
    beta = np.zeros(0) if integrate_beta else m.beta_values + rng.normal(scale=0.1, size=c.p)
    return beta_prior, beta, 1.3, Ls


class _UnitVectors:
    """A stand-in generator whose "standard normal" draws are 0, e_1, e_2, ...: draw_u then shows its mean and factor."""

    def __init__(self):
        self.calls = 0

    def standard_normal(self, size):
        z = np.zeros(size)
        if 0 < self.calls <= size:
            z[self.calls - 1] = 1.0
        self.calls += 1
        return z


@pytest.mark.parametrize("integrate_beta", [True, False])
@pytest.mark.parametrize("name", list(MODELS))
def test_blocked_density_and_gradient_equal_the_dense_ones(name, integrate_beta):
    m = _fit(name)
    beta_prior, beta, sigma, Ls = _arguments(m, integrate_beta)
    dense = CollapsedLmm(m.compiled, beta_prior).value_and_grad(beta, sigma, Ls)
    blocked = BlockedCollapsedLmm(m.compiled, beta_prior).value_and_grad(beta, sigma, Ls)
    assert blocked[0] == pytest.approx(dense[0], rel=1e-12, abs=1e-8)
    np.testing.assert_allclose(blocked[1], dense[1], rtol=1e-9, atol=1e-9)
    assert blocked[2] == pytest.approx(dense[2], rel=1e-9, abs=1e-8)
    for b, d in zip(blocked[3], dense[3]):
        np.testing.assert_allclose(b, d, rtol=1e-9, atol=1e-8)


@pytest.mark.parametrize("integrate_beta", [True, False])
@pytest.mark.parametrize("name", ["crossed", "nested", "correlated", "vector_first", "vector_rest"])
def test_blocked_draws_have_the_exact_conditional_mean_and_covariance(name, integrate_beta):
    m = _fit(name)
    beta_prior, beta, sigma, Ls = _arguments(m, integrate_beta)
    moments = []
    for density in (CollapsedLmm(m.compiled, beta_prior), BlockedCollapsedLmm(m.compiled, beta_prior)):
        rng = _UnitVectors()
        mean = density.draw_u(beta, sigma, Ls, rng)
        columns = np.array([density.draw_u(beta, sigma, Ls, rng) - mean for _ in range(len(mean))])
        moments.append((mean, columns.T @ columns))  # Σ_i (L⁻ᵀe_i)(L⁻ᵀe_i)' = A⁻¹
    np.testing.assert_allclose(moments[1][0], moments[0][0], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(moments[1][1], moments[0][1], rtol=1e-9, atol=1e-12)


def test_the_blocked_route_needs_a_small_dense_block(monkeypatch):
    import bayesmix.bayes.blockedlmm as blockedlmm

    m = _fit("crossed")  # 24 plates first, then 6 samples + X + y: a 8-wide dense block
    assert applicable(m.compiled)
    monkeypatch.setattr(blockedlmm, "MAX_DENSE", 7)
    assert not applicable(m.compiled)
    with pytest.raises(ValueError, match="dense block of at most 7 columns"):
        BlockedCollapsedLmm(m.compiled)


def _many_groups(seed=4, slope_sd=0.0):
    """400 students crossed with 12 raters: 412 random effects, beyond the dense collapsed route."""
    rng = np.random.default_rng(seed)
    student = np.repeat(np.arange(400), 3)
    rater = rng.integers(0, 12, size=len(student))
    x = rng.normal(size=len(student))
    y = 1.0 + 0.5 * x + rng.normal(0, 0.7, 400)[student] + rng.normal(0, 0.4, 12)[rater] + rng.normal(size=len(x))
    if slope_sd:
        y = y + rng.normal(0, slope_sd, 400)[student] * x
    return pd.DataFrame({"y": y, "x": x, "student": pd.Categorical([f"s{i}" for i in student]),
                         "rater": pd.Categorical([f"r{i}" for i in rater])})


@pytest.mark.parametrize(("formula", "slope_sd"), [("y ~ x + (1 | student) + (1 | rater)", 0.0),
                                                   ("y ~ x + (x | student) + (1 | rater)", 0.6)])
def test_many_random_effects_are_sampled_collapsed_with_the_blocked_density(formula, slope_sd):
    # (x | student) on data with slope variance: on data without it the fit was singular, its slope
    # modes degenerate (a multiple of the intercept's), and the posterior-mean check below sat at
    # 0.48-0.55 of its limit depending on the seed; with a slope variance every ratio is <= 0.15
    m = bm.lmer(formula, _many_groups(slope_sd=slope_sd), REML=False)
    post_density = FastPosterior(m, resolve_priors(m, None), collapsed=True)
    assert isinstance(post_density.lik, BlockedCollapsedLmm)
    post = m.sample(draws=300, tune=300, chains=2, random_seed=8, progressbar=False)
    p = post["posterior"]
    assert "blocked Cholesky" in p.attrs["route"]
    assert p["b_student"].shape == (2, 300, 400, m.compiled.terms[0].k)
    table = bm.compare(m, post)
    assert table["r_hat"].max() < 1.02
    assert int(post["sample_stats"]["diverging"].sum()) == 0
    fixed = table[table["kind"] == "fixed"]
    assert np.all(np.abs(fixed["mean"] - fixed["estimate"]) < 0.5 * fixed["sd"])
    # the random effects' posterior means near the conditional modes
    b_mean = p["b_student"].mean(("chain", "draw")).values
    b_sd = p["b_student"].std(("chain", "draw")).values
    assert np.all(np.abs(b_mean - m.ranef["student"].to_numpy()) < 0.5 * b_sd)


def test_insteval_blocked_density_equals_the_dense_one():
    """The reference case the blocked route exists for: 4100 random effects, 28 fixed effects integrated."""
    from conftest import cached_fit

    m = cached_fit("instEval_crossed_ml").model
    c = m.compiled
    sds = [np.array([[0.33]]), np.array([[0.5]])]
    beta_prior = (np.zeros(c.p), np.full(c.p, 40.0))
    dense = CollapsedLmm(c, beta_prior).value_and_grad(np.zeros(0), 1.18, sds)
    blocked = BlockedCollapsedLmm(c, beta_prior).value_and_grad(np.zeros(0), 1.18, sds)
    assert blocked[0] == pytest.approx(dense[0], rel=1e-12)
    assert blocked[2] == pytest.approx(dense[2], rel=1e-8, abs=1e-6)
    for b, d in zip(blocked[3], dense[3]):
        np.testing.assert_allclose(b, d, rtol=1e-8, atol=1e-6)


@pytest.mark.parametrize("integrate_beta", [True, False])
def test_blocked_density_with_weights_and_offset(integrate_beta):
    """Prior weights (zeros among them) and an offset reach the blocked density as they reach the dense one."""
    data = _many_groups(seed=9).iloc[:300].copy()
    rng = np.random.default_rng(2)
    data["w"] = rng.uniform(0.5, 2.0, len(data))
    data.loc[data.index[:5], "w"] = 0.0
    data["off"] = rng.normal(size=len(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = bm.lmer("y ~ x + offset(off) + (1 | student) + (1 | rater)", data, weights="w")
    beta_prior, beta, sigma, Ls = _arguments(m, integrate_beta, seed=3)
    dense = CollapsedLmm(m.compiled, beta_prior).value_and_grad(beta, sigma, Ls)
    blocked = BlockedCollapsedLmm(m.compiled, beta_prior).value_and_grad(beta, sigma, Ls)
    assert blocked[0] == pytest.approx(dense[0], rel=1e-12)
    np.testing.assert_allclose(blocked[1], dense[1], rtol=1e-9, atol=1e-9)
    assert blocked[2] == pytest.approx(dense[2], rel=1e-9)
    for b, d in zip(blocked[3], dense[3]):
        np.testing.assert_allclose(b, d, rtol=1e-9, atol=1e-8)
