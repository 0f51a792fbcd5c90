"""Within, between and random-effects estimators and the Hausman test, against R's plm 2.6-2.

Reference: tests/reference/issues/hausman.json (made by tests/reference/issues/make_issues.R:
``plm(y ~ x, panel_corr, index = c("id", "time"), model = "within" | "between" | "random")``
and ``phtest(within, random)``; random = Swamy–Arora).  The sleepstudy case is degenerate
(Days has no between-subject variation; plm's statistic 1.1e-13): tested as ≈ 0.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm
from bayesmix.inference import between_estimator, swamy_arora, with_group_means, within_estimator

REF_DIR = Path(__file__).parent / "reference" / "issues"
REF = json.loads((REF_DIR / "hausman.json").read_text())


@pytest.fixture(scope="module")
def panel():
    return pd.read_csv(REF_DIR / "data" / "panel_corr.csv")


@pytest.fixture(scope="module")
def m_panel(panel):
    return bm.lmer("y ~ x + (1 | id)", panel)


def _check(est, ref, rel=1e-8):
    assert list(est.coef.index) == ref["names"]
    np.testing.assert_allclose(est.coef.to_numpy(), ref["estimate"], rtol=rel)
    np.testing.assert_allclose(est.se.to_numpy(), ref["se"], rtol=rel)
    np.testing.assert_allclose(est.vcov.to_numpy(), np.array(ref["vcov"]), rtol=rel)


def test_within_between_and_swamy_arora_match_plm(m_panel):
    ref = REF["panel_corr"]["coefficients"]
    _check(within_estimator(m_panel), ref["within"])
    _check(between_estimator(m_panel), ref["between"])
    _check(swamy_arora(m_panel), ref["random"], rel=1e-7)
    # plm's ercomp: σ²_idios is the within residual variance
    assert within_estimator(m_panel).sigma2 == pytest.approx(REF["panel_corr"]["random_ercomp"]["sigma2"]["idios"], rel=1e-10)


def test_hausman_swar_reproduces_phtest(m_panel):
    ref = REF["panel_corr"]["phtest"]
    h = bm.hausman(m_panel, random="swar")
    assert h.statistic == pytest.approx(ref["statistic"], rel=1e-7)
    assert h.df == ref["df"] == 1
    assert h.p_value == pytest.approx(ref["p_value"], rel=1e-6)
    assert "chisq = 101.62, df = 1, p-value < 2.2e-16" in str(h)
    assert h.alternative == ref["alternative"] and h.method == ref["method"]


def test_hausman_with_the_mixed_model_is_the_identity_on_its_estimates(m_panel):
    # random = "model" compares the within slope with the REML fit's own β̂ and vcov
    h = bm.hausman(m_panel)
    w = within_estimator(m_panel)
    d = w.coef["x"] - m_panel.fixef["x"]
    expected = d ** 2 / (w.vcov.loc["x", "x"] - m_panel.vcov.loc["x", "x"])
    assert h.statistic == pytest.approx(expected, rel=1e-12)
    assert h.p_value < 1e-6  # the group effects are correlated with x by construction
    assert list(h.table().columns) == ["within", "mixed model (REML)", "difference", "SE of difference"]


def test_sleepstudy_is_degenerate(sleep=None):
    sleep = bm.load_dataset("sleepstudy")
    m = bm.lmer("Reaction ~ Days + (1 | Subject)", sleep)
    ref = REF["sleepstudy"]
    _check(within_estimator(m), ref["coefficients"]["within"])
    _check(between_estimator(m), ref["coefficients"]["between"])
    for random in ("model", "swar"):
        h = bm.hausman(m, random=random)
        assert h.statistic == pytest.approx(0.0, abs=1e-8) and h.df == 1
    _check(swamy_arora(m), ref["coefficients"]["random"], rel=1e-7)


def test_mundlak_slope_equals_within_slope(panel, m_panel):
    data = with_group_means(panel, "x", "id")
    m = bm.lmer("y ~ x + x_mean + (1 | id)", data)
    w = within_estimator(m_panel)
    b = between_estimator(m_panel)
    # balanced panel: the Mundlak GLS slope of x is exactly the within slope; x_mean's is between − within
    assert m.fixef["x"] == pytest.approx(w.coef["x"], rel=1e-7)
    assert m.fixef["x_mean"] == pytest.approx(b.coef["x"] - w.coef["x"], rel=1e-6)


def test_hausman_refuses_what_it_cannot_test(panel):
    cbpp = bm.load_dataset("cbpp")
    g = bm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial")
    with pytest.raises(bm.InferenceError, match="linear mixed models"):
        bm.hausman(g)
    pen = bm.load_dataset("Penicillin")
    m = bm.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", pen)
    with pytest.raises(bm.InferenceError, match="one grouping factor"):
        bm.hausman(m)
    between_only = bm.lmer("y ~ x_mean + (1 | id)", with_group_means(panel, "x", "id"))
    with pytest.raises(bm.InferenceError, match="no fixed-effect covariate varies within groups"):
        bm.hausman(between_only)
    with pytest.raises(bm.ArgumentError, match="random must be 'model' or 'swar'"):
        bm.hausman(between_only, random="gls")
    with pytest.raises(bm.ArgumentError, match=r"no column\(s\) \['z'\]"):
        with_group_means(panel, "z", "id")
    unbalanced = bm.lmer("y ~ x + (1 | id)", panel.iloc[1:])
    with pytest.raises(bm.ArgumentError, match="balanced panel"):
        bm.hausman(unbalanced, random="swar")
