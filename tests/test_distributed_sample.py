"""The collapsed NUTS sampler on a Dask lmer fit (issue 15, item 3): the density from the reduced sums.

The collapsed LMM densities (bayes.densities.CollapsedLmm, dense; bayes.blockedlmm's blocked
one) need the data only through ``[Z X y]'W[Z X y]``: the residual sum of squares and the
gradient's ``Z'W r``, ``X'W r`` are quadratic forms of those cross-products.  A Dask fit hands
its reduced cross-products to them (and its row moments to the data-scaled default priors),
so at any point the log density and its gradient equal the in-memory ones to rounding, and
``sample()`` with the same seed makes the same draws.
"""

import numpy as np
import pandas as pd
import pytest
from dask_support import cluster, partitioned  # noqa: F401  (cluster: the module's autouse fixture)

import bayesmix as bm


def _densities(fit, blocked: bool, integrate_beta: bool):
    """The fast route's posterior of ``fit`` with the dense or the blocked collapsed density."""
    from bayesmix.bayes.blockedlmm import BlockedCollapsedLmm
    from bayesmix.bayes.densities import CollapsedLmm
    from bayesmix.bayes.posterior import FastPosterior, rowless_cross_products
    from bayesmix.bayes.pymc_model import resolve_priors

    post = FastPosterior(fit, resolve_priors(fit, None), collapsed=True)
    beta_prior = (post.lik.beta_mean, np.diag(post.lik.beta_factor)) if integrate_beta else None
    kind = BlockedCollapsedLmm if blocked else CollapsedLmm
    post.lik = kind(fit.compiled, beta_prior, cross=rowless_cross_products(fit))
    post.integrate_beta = integrate_beta
    post.p = 0 if integrate_beta else fit.compiled.p
    post.dim = post.p + post.variance.size
    post.kernel = None  # NumPy's density: the comparison is of the statistics, not of the compiled kernel
    return post


def _assert_same_density(d, m, blocked, integrate_beta):
    a, b = _densities(m, blocked, integrate_beta), _densities(d, blocked, integrate_beta)
    assert b.lik.n == a.lik.n and b.lik.const == pytest.approx(a.lik.const, rel=1e-13)
    rng = np.random.default_rng(11)
    start = np.concatenate([m.beta_values[: a.p], a.start()[a.p:]])
    for _ in range(4):
        x = start + 0.2 * rng.standard_normal(len(start))
        (la, ga), (lb, gb) = a.numpy_logp_and_grad(x), b.numpy_logp_and_grad(x)
        assert lb == pytest.approx(la, rel=1e-12)
        np.testing.assert_allclose(gb, ga, rtol=1e-9, atol=1e-10 * np.max(np.abs(ga)))


SLEEP = "Reaction ~ Days + (Days | Subject)"


@pytest.mark.parametrize("blocked", [False, True], ids=["dense", "blocked"])
@pytest.mark.parametrize("integrate_beta", [True, False], ids=["beta integrated", "beta sampled"])
def test_collapsed_density_from_the_reduced_sums(blocked, integrate_beta):
    df = bm.load_dataset("sleepstudy")
    d, m = bm.lmer(SLEEP, partitioned(df, [50, 50, 120])), bm.lmer(SLEEP, df)
    _assert_same_density(d, m, blocked, integrate_beta)


@pytest.mark.parametrize("integrate_beta", [True, False], ids=["beta integrated", "beta sampled"])
def test_blocked_density_with_crossed_terms_weights_and_offset(integrate_beta):
    """Two crossed terms (Zrest'WZ1 off the diagonal), prior weights and an offset; levels of g
    occur in one partition only (rows sorted by g)."""
    rng = np.random.default_rng(5)
    n = 600
    df = pd.DataFrame({"g": rng.integers(0, 60, n), "h": rng.integers(0, 9, n), "x": rng.normal(size=n),
                       "w": rng.uniform(0.5, 2.0, n), "off": rng.normal(scale=0.2, size=n)})
    df["y"] = 1 + df["x"] + rng.normal(size=60)[df["g"]] + 0.5 * rng.normal(size=9)[df["h"]] + rng.normal(size=n)
    df = df.sort_values("g", kind="stable").reset_index(drop=True)
    formula = "y ~ x + (x | g) + (1 | h)"
    d = bm.lmer(formula, partitioned(df, [150, 150, 420]), weights="w", offset="off")
    m = bm.lmer(formula, df, weights="w", offset="off")
    _assert_same_density(d, m, True, integrate_beta)
    _assert_same_density(d, m, False, integrate_beta)


def test_sample_on_a_dask_fit_makes_the_in_memory_draws():
    pytest.importorskip("nutpie")
    df = bm.load_dataset("sleepstudy")
    d, m = bm.lmer(SLEEP, partitioned(df, [50, 50, 120])), bm.lmer(SLEEP, df)
    kwargs = {"draws": 150, "tune": 150, "chains": 2, "random_seed": 5, "progressbar": False}
    got, want = d.sample(**kwargs), m.sample(**kwargs)
    for name in ("beta", "sigma", "sd_Subject", "corr_Subject", "b_Subject"):
        g, w = got["posterior"][name].values, want["posterior"][name].values
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6 * np.max(np.abs(w)))  # the same draws, to rounding
    assert got["posterior"].attrs["route"] == want["posterior"].attrs["route"]
    assert "observed_data" not in got.children  # the rows stay on the cluster
