"""The optimizer must not stop on a variance bound when the optimum lies inside.

Near θ = 0 the profiled deviance depends on θ² only, so its gradient vanishes there and a
quasi-Newton path can end on (or next to) the bound in a singular local optimum.  Both
cases below did, before the inward probe/restart in bayesmix.engine.optimize; the expected
numbers were printed by R 4.2.2 / lme4 1.1-31 (the R code is in each docstring).
"""

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm


def _unbalanced_groups() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    sizes = [2, 3, 3, 4, 5, 6, 8, 10, 12, 15, 18, 22, 27, 33, 40, 50, 60, 75, 90, 120]
    g = np.repeat(np.arange(20), rng.permutation(sizes))
    y = 70 + rng.normal(0, 5, 20)[g] + rng.normal(0, 12, len(g))
    return pd.DataFrame({"y": y, "g": pd.Categorical([f"g{i}" for i in g])})


def test_unbalanced_random_intercept_leaves_the_bound():
    """R: d <- read.csv(...); m <- lmer(y ~ 1 + (1|g), d); getME(m, "theta"); REMLcrit(m); fixef(m)"""
    m = bm.lmer("y ~ 1 + (1 | g)", data=_unbalanced_groups())
    assert not m.singular
    assert m.theta.iloc[0] == pytest.approx(0.2582097717, rel=2e-3)
    assert m.reml_criterion <= 4744.05911623 + 1e-6
    assert m.fixef.iloc[0] == pytest.approx(70.0738973714, abs=1e-3 * m.se.iloc[0])


def test_sleepstudy_with_a_short_subject_finds_lme4s_optimum():
    """R: s2 <- sleepstudy[!(sleepstudy$Subject == "370" & sleepstudy$Days > 2), ]
    m <- lmer(Reaction ~ Days + (Days | Subject), s2); getME(m, "theta"); REMLcrit(m)"""
    s = bm.load_dataset("sleepstudy")
    s2 = s[~((s.Subject == "370") & (s.Days > 2))]
    m = bm.lmer("Reaction ~ Days + (Days | Subject)", data=s2)
    assert not m.singular
    assert m.reml_criterion <= 1673.206 + 1e-3
    np.testing.assert_allclose(m.theta.to_numpy(), [0.9245637, 0.0482456, 0.2226125], rtol=2e-3, atol=2e-4)
