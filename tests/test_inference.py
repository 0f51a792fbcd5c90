"""Inference beyond Wald against lme4 1.1-31, lmerTest 3.1-3 and pbkrtest 0.5.2 (tests/reference/inference.json).

The JSON numbers were made by ../shared/lme4-reference/inference.R.  A few further expected
values (RLRsim 3.1-8's observed statistics, lmerTest's printed coefficient table) were
printed by R 4.2.2 with the R code quoted next to them.  R is never called from the tests.
Tolerance: 1e-3 relative, as the issue states (p-values likewise).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm
from bayesmix.inference import InferenceError
from bayesmix.inference.parametric_bootstrap import sdcor_and_fixef
from bayesmix.inference.rlrt import rlrt_null_sample

REF = json.loads((Path(__file__).parent / "reference" / "inference.json").read_text())
RTOL = 1e-3


def _num(values) -> np.ndarray:
    return np.array([np.nan if v == "NA" else v for v in values], dtype=float)


def _assert_rel(actual, expected, what, rtol=RTOL):
    actual, expected = np.asarray(actual, dtype=float), _num(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    both_nan = np.isnan(actual) & np.isnan(expected)
    assert not np.any(np.isnan(actual) != np.isnan(expected)), f"{what}: NA pattern {actual} vs {expected}"
    ok = both_nan | (np.abs(actual - expected) <= rtol * np.abs(expected))
    assert ok.all(), f"{what}: ours {actual[~ok]}, reference {expected[~ok]}"


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def sleep():
    return bm.load_dataset("sleepstudy")


@pytest.fixture(scope="module")
def fm1(sleep):
    return bm.lmer("Reaction ~ Days + (Days | Subject)", sleep, data_name="sleepstudy")


@pytest.fixture(scope="module")
def fm0(sleep):
    return bm.lmer("Reaction ~ Days + (1 | Subject)", sleep, data_name="sleepstudy")


@pytest.fixture(scope="module")
def fm1_profile(fm1):
    return fm1.profile()


@pytest.fixture(scope="module")
def cbpp_fits():
    cbpp = bm.load_dataset("cbpp")
    gm1 = _quiet(bm.glmer, "cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial",
                 data_name="cbpp")
    gm0 = _quiet(bm.glmer, "cbind(incidence, size - incidence) ~ 1 + (1 | herd)", cbpp, family="binomial",
                 data_name="cbpp")
    return gm0, gm1


@pytest.fixture(scope="module")
def cake_fit():
    return bm.lmer("angle ~ recipe * temp + (1 | recipe:replicate)", bm.load_dataset("cake"), data_name="cake")


# --- likelihood-ratio tests (lme4's anova) ---------------------------------------------------------


def test_anova_sleepstudy_matches_lme4(fm0, fm1, capsys):
    ref = REF["anova_sleepstudy"]
    table = bm.anova(fm0, fm1)
    assert "refitting model(s) with ML (instead of REML)" in capsys.readouterr().err
    assert list(table.index) == ["fm0", "fm1"]
    for col, key in [("npar", "npar"), ("AIC", "AIC"), ("BIC", "BIC"), ("logLik", "logLik"),
                     ("deviance", "deviance"), ("Chisq", "Chisq"), ("Df", "Df"), ("Pr(>Chisq)", "p")]:
        _assert_rel(table[col].to_numpy(), ref[key], f"anova {col}")
    assert str(table) == ref["text"]
    assert table.heading[2:] == [f"{n}: {f}" for n, f in zip(["fm0", "fm1"], ref["models"])]


def test_anova_orders_models_by_parameters_and_takes_names(fm0, fm1, capsys):
    table = bm.anova(fm1, fm0, names=["full", "reduced"])
    capsys.readouterr()
    assert list(table.index) == ["reduced", "full"]
    assert table["npar"].tolist() == [4.0, 6.0]


def test_anova_cbpp_matches_lme4(cbpp_fits):
    gm0, gm1 = cbpp_fits
    ref = REF["anova_cbpp"]
    table = bm.anova(gm0, gm1)
    _assert_rel(table["Chisq"].to_numpy(), ref["Chisq"], "Chisq")
    _assert_rel(table["Df"].to_numpy(), ref["Df"], "Df")
    _assert_rel(table["Pr(>Chisq)"].to_numpy(), ref["p"], "Pr(>Chisq)")
    # our Laplace optimum is a little lower than lme4's, so logLik's last printed digit differs;
    # the heading and the layout are lme4's
    ours, theirs = str(table).split("\n"), ref["text"].split("\n")
    assert ours[:4] == theirs[:4]
    assert ours[4] == theirs[4] and ours[-2:] == theirs[-2:]


def test_anova_refuses_models_it_cannot_compare(sleep, fm0, fm1, cbpp_fits):
    with pytest.raises(InferenceError, match="two or more fitted models"):
        bm.anova(fm1)
    shorter = bm.lmer("Reaction ~ Days + (1 | Subject)", sleep.iloc[:170])
    with pytest.raises(InferenceError, match="same size of dataset.*180.*170"):
        bm.anova(fm0, shorter)
    other_response = bm.lmer("log(Reaction) ~ Days + (Days | Subject)", sleep)
    with pytest.raises(InferenceError, match="same response"):
        bm.anova(fm0, other_response)
    not_nested = bm.lmer("Reaction ~ 1 + (Days | Subject)", sleep)
    with pytest.raises(InferenceError, match="not nested.*fixed effects"):
        bm.anova(fm0, not_nested)
    with pytest.raises(InferenceError, match="linear mixed model with a GLMM"):
        bm.anova(fm0, cbpp_fits[1])
    with pytest.raises(InferenceError, match="not a fitted"):
        bm.anova(fm0, "fm1")


# --- profile and Wald intervals (lme4's confint) ---------------------------------------------------


def test_profile_confint_sleepstudy_matches_lme4(fm1, fm1_profile):
    ref = REF["confint_profile_sleepstudy"]
    ci = fm1_profile.confint(level=ref["level"])
    assert list(ci.index) == ref["names"]
    assert list(ci.columns) == ["2.5 %", "97.5 %"]
    _assert_rel(ci["2.5 %"].to_numpy(), ref["lower"], "profile lower")
    _assert_rel(ci["97.5 %"].to_numpy(), ref["upper"], "profile upper")


def test_profile_is_lme4s_thpr(fm1, fm1_profile):
    prof = fm1_profile
    assert {"parameter", "value", "zeta"} <= set(prof.columns)
    for name, part in prof.groupby("parameter", sort=False):
        assert np.all(np.diff(part["value"]) > 0), name
        assert np.all(np.diff(part["zeta"]) > 0), f"{name}: zeta must increase with the parameter"
        at_estimate = part.loc[part["zeta"] == 0, "value"]
        assert len(at_estimate) == 1, name
        assert part["zeta"].min() < -2.5 and part["zeta"].max() > 2.5, name
    # lme4's stepping rule visits the same number of points per parameter (from lme4's profile(fm1))
    sizes = prof.groupby("parameter").size().to_dict()
    assert sizes == {"sd_(Intercept)|Subject": 21, "cor_Days.(Intercept)|Subject": 19, "sd_Days|Subject": 20,
                     "sigma": 19, "(Intercept)": 19, "Days": 19}
    one = fm1.profile(which="sigma")
    assert set(one["parameter"]) == {"sigma"}
    _assert_rel(one.confint().to_numpy().ravel(), np.asarray(prof.confint().loc["sigma"]), "profile(which='sigma')")
    ci = fm1.confint(parm=["sigma", "Days"], method="profile")  # the same through confint(parm=)
    assert list(ci.index) == ["sigma", "Days"]


def test_wald_confint_sleepstudy_matches_lme4(fm1):
    ref = REF["confint_wald_sleepstudy"]
    ci = fm1.confint(method="Wald")
    assert list(ci.index) == ref["names"]
    _assert_rel(ci["2.5 %"].to_numpy(), ref["lower"], "Wald lower")
    _assert_rel(ci["97.5 %"].to_numpy(), ref["upper"], "Wald upper")
    sub = fm1.confint(parm=["Days"], method="Wald", level=0.9)
    assert list(sub.columns) == ["5 %", "95 %"] and list(sub.index) == ["Days"]
    # R: rownames(confint(lmer(Reaction ~ Days + (Days || Subject), sleepstudy), oldNames = FALSE))
    uncorrelated = bm.lmer("Reaction ~ Days + (Days || Subject)", fm1.compiled.data)
    assert list(uncorrelated.confint(method="Wald").index) == [
        "sd_(Intercept)|Subject", "sd_Days|Subject", "sigma", "(Intercept)", "Days"]


def test_profile_confint_cbpp_matches_lme4(cbpp_fits):
    ref = REF["confint_profile_cbpp"]
    ci = cbpp_fits[1].confint()
    assert list(ci.index) == ref["names"]
    _assert_rel(ci["2.5 %"].to_numpy(), ref["lower"], "GLMM profile lower")
    _assert_rel(ci["97.5 %"].to_numpy(), ref["upper"], "GLMM profile upper")


def test_confint_refuses_bad_requests(fm1, sleep):
    with pytest.raises(InferenceError, match="unknown method"):
        fm1.confint(method="bayes")
    with pytest.raises(InferenceError, match="level"):
        fm1.confint(method="Wald", level=1.5)
    with pytest.raises(InferenceError, match="unknown parameter"):
        fm1.confint(parm="sd_Days|Nobody", method="Wald")
    with pytest.raises(InferenceError, match="unknown parameter"):
        fm1.profile(which="Nights")
    gamma = _quiet(bm.glmer, "Reaction ~ Days + (1 | Subject)", sleep, family="Gamma(log)")
    with pytest.raises(InferenceError, match="estimated scale"):
        gamma.profile()
    theta_only = _quiet(bm.glmer, "cbind(incidence, size - incidence) ~ period + (1 | herd)", bm.load_dataset("cbpp"),
                        family="binomial", nAGQ=0)
    with pytest.raises(InferenceError, match="nAGQ = 0"):
        theta_only.confint()


# --- denominator degrees of freedom (lmerTest, pbkrtest) ---------------------------------------------


def test_satterthwaite_summary_sleepstudy_matches_lmertest(fm1):
    ref = REF["satterthwaite_sleepstudy"]
    table = bm.inference.coef_table(fm1, "Satterthwaite")
    assert list(table.index) == ref["names"]
    _assert_rel(table["df"], ref["df"], "Satterthwaite df")
    _assert_rel(table["t value"], ref["t"], "t value")
    _assert_rel(table["Pr(>|t|)"], ref["p"], "Pr(>|t|)")


def test_kenward_roger_summary_sleepstudy_matches_pbkrtest(fm1):
    ref = REF["kenward_roger_sleepstudy"]
    table = bm.inference.coef_table(fm1, "Kenward-Roger")
    _assert_rel(table["df"], ref["df"], "Kenward-Roger df")
    _assert_rel(table["Std. Error"], ref["se"], "adjusted SE")
    _assert_rel(table["Pr(>|t|)"], ref["p"], "Pr(>|t|)")


def test_summary_with_ddf_prints_as_lmertest(fm1):
    text = fm1.summary(ddf="Satterthwaite")
    # R: print(summary(lmerTest::lmer(Reaction ~ Days + (Days | Subject), sleepstudy)))
    expected = [
        "Linear mixed model fit by REML. t-tests use Satterthwaite's method [",
        "lmerModLmerTest]",
    ]
    assert text.split("\n")[:2] == expected
    table = [
        "            Estimate Std. Error      df t value Pr(>|t|)    ",
        "(Intercept)  251.405      6.825  17.000  36.838  < 2e-16 ***",
        "Days          10.467      1.546  17.000   6.771 3.26e-06 ***",
    ]
    lines = text.split("\n")
    start = lines.index("Fixed effects:")
    assert lines[start + 1 : start + 4] == table
    assert "Kenward-Roger's method" in fm1.summary(ddf="Kenward-Roger").split("\n")[0]
    assert "t-tests use" not in fm1.summary().split("\n")[0]


def test_satterthwaite_anova_cake_matches_lmertest(cake_fit):
    ref = REF["satterthwaite_anova_cake"]
    table = cake_fit.anova_table()
    assert list(table.index) == ref["terms"]
    _assert_rel(table["NumDF"], ref["NumDF"], "NumDF")
    _assert_rel(table["DenDF"], ref["DenDF"], "DenDF")
    _assert_rel(table["F value"], ref["F"], "F value")
    _assert_rel(table["Pr(>F)"], ref["p"], "Pr(>F)")
    assert str(table) == ref["text"]


def test_type3_anova_with_polynomial_contrasts():
    # R: anova(lmerTest::lmer(angle ~ recipe * temperature + (1 | recipe:replicate), cake))
    # (temperature is an ordered factor: lmerTest maps its treatment-coded hypotheses onto contr.poly)
    #                          Sum Sq     Mean Sq NumDF        DenDF  F value  Pr(>F)
    # recipe               10.1858615   5.0929308     2  41.99999981  0.24879 0.78089
    # temperature        2100.3000169 420.0600034     5 210.00000007 20.51986 < 2e-16
    # recipe:temperature  205.9777778  20.5977778    10 210.00000007  1.00620 0.43927
    fit = bm.lmer("angle ~ recipe * temperature + (1 | recipe:replicate)", bm.load_dataset("cake"))
    table = fit.anova_table()
    _assert_rel(table["NumDF"], [2, 5, 10], "NumDF")
    _assert_rel(table["DenDF"], [41.99999981, 210.00000007, 210.00000007], "DenDF")
    _assert_rel(table["F value"], [0.24879, 20.51986, 1.00620], "F value")
    _assert_rel(table["Pr(>F)"].iloc[[0, 2]], [0.78089, 0.43927], "Pr(>F)")
    assert table["Pr(>F)"].iloc[1] < 2e-16
    _assert_rel(table["Sum Sq"], [10.1858615, 2100.3000169, 205.9777778], "Sum Sq")


def test_kenward_roger_anova_cake(cake_fit):
    # R: anova(lmerTest::lmer(angle ~ recipe * temp + (1 | recipe:replicate), cake), ddf = "Kenward-Roger")
    # prints the same F values and (to 2 decimals) DenDF as Satterthwaite for this balanced design
    kr = cake_fit.anova_table(ddf="Kenward-Roger")
    sat = REF["satterthwaite_anova_cake"]
    _assert_rel(kr["F value"], sat["F"], "KR F value")
    _assert_rel(kr["DenDF"], sat["DenDF"], "KR DenDF")
    assert kr.heading == ["Type III Analysis of Variance Table with Kenward-Roger's method"]


def test_ddf_refuses_what_it_cannot_do(sleep, cbpp_fits):
    gm1 = cbpp_fits[1]
    with pytest.raises(InferenceError, match="linear mixed models"):
        gm1.summary(ddf="Satterthwaite")
    with pytest.raises(InferenceError, match="linear mixed models"):
        gm1.anova_table(ddf="Kenward-Roger")
    ml = bm.lmer("Reaction ~ Days + (Days | Subject)", sleep, REML=False)
    with pytest.raises(InferenceError, match="only available for REML"):
        ml.summary(ddf="Kenward-Roger")
    assert np.isfinite(bm.inference.coef_table(ml, "Satterthwaite")["df"]).all()
    with pytest.raises(InferenceError, match="unknown ddf"):
        ml.anova_table(ddf="Welch")
    with pytest.raises(InferenceError, match="type"):
        ml.anova_table(type="II")


# --- simulation, refit, bootstrap, parametric-bootstrap test -----------------------------------------


def test_simulate_is_reproducible_and_has_the_model_mean(fm1):
    a = fm1.simulate(nsim=200, seed=11)
    b = fm1.simulate(nsim=200, seed=11)
    assert a.shape == (180, 200) and list(a.columns[:2]) == ["sim_1", "sim_2"]
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(fm1.simulate(nsim=200, seed=12))
    mean = fm1.compiled.X @ fm1.fixef.to_numpy()
    # marginal SD of one observation is about 30-45 ms; 200 draws: SE of a mean about 3
    assert np.max(np.abs(a.to_numpy().mean(axis=1) - mean)) < 15
    # per-subject random intercepts: the between-subject SD of simulated subject means is near sd_(Intercept)
    with pytest.raises(InferenceError, match="nsim"):
        fm1.simulate(nsim=0)


def test_refit_reuses_the_model(fm1, sleep, cbpp_fits):
    same = fm1.refit(sleep["Reaction"].to_numpy())
    assert same.REML and abs(same.criterion_value - fm1.criterion_value) < 1e-6
    np.testing.assert_allclose(same.fixef, fm1.fixef, rtol=1e-7)
    y = fm1.simulate(seed=1)["sim_1"]
    new = fm1.refit(y)
    direct = bm.lmer("Reaction ~ Days + (Days | Subject)", sleep.assign(Reaction=y.to_numpy()))
    assert abs(new.criterion_value - direct.criterion_value) < 1e-6
    with pytest.raises(InferenceError, match="179 values"):
        fm1.refit(np.ones(179))
    gm1 = cbpp_fits[1]
    ysim = gm1.simulate(seed=3)["sim_1"].to_numpy()
    assert np.all((ysim >= 0) & (ysim <= 1))
    assert np.allclose(ysim * gm1.compiled.weights, np.round(ysim * gm1.compiled.weights))
    assert np.isfinite(_quiet(gm1.refit, ysim).loglik)


def test_bootstrap_reproducible_sequential_and_parallel_agree(fm0, capsys):
    seq = _quiet(fm0.bootstrap, sdcor_and_fixef, nsim=8, seed=5, n_jobs=1, progress=True)
    assert "8/8" in capsys.readouterr().err  # the stderr counter, or tqdm's bar when installed
    again = _quiet(fm0.bootstrap, sdcor_and_fixef, nsim=8, seed=5, n_jobs=1, progress=False)
    par = _quiet(fm0.bootstrap, sdcor_and_fixef, nsim=8, seed=5, n_jobs=2, progress=False)
    assert list(seq.t.columns) == ["sd_(Intercept)|Subject", "sigma", "(Intercept)", "Days"]
    pd.testing.assert_frame_equal(seq.t, again.t)
    pd.testing.assert_frame_equal(seq.t, par.t)
    assert seq.n_failed == 0 and np.all(np.isfinite(seq.t.to_numpy()))
    ci = seq.confint()
    assert list(ci.columns) == ["2.5 %", "97.5 %"] and np.all(ci["2.5 %"] <= ci["97.5 %"])
    with pytest.warns(UserWarning, match="cannot be sent to worker processes"):
        lam = fm0.bootstrap(lambda m: m.sigma, nsim=4, seed=5, n_jobs=2, progress=False)
    np.testing.assert_allclose(lam.t["t1"], seq.t["sigma"].iloc[:4])


def test_confint_boot(fm0):
    ci = _quiet(fm0.confint, method="boot", nsim=20, seed=3, n_jobs=1, progress=False)
    assert list(ci.index) == ["sd_(Intercept)|Subject", "sigma", "(Intercept)", "Days"]
    est = sdcor_and_fixef(fm0)
    assert np.all((ci["2.5 %"] < est) & (est < ci["97.5 %"]))


def test_pb_test_sanity(fm0, fm1, sleep):
    pb = _quiet(bm.pb_test, fm0, fm1, nsim=12, seed=7, n_jobs=1, progress=False)
    again = _quiet(bm.pb_test, fm1, fm0, nsim=12, seed=7, n_jobs=1, progress=False)
    np.testing.assert_array_equal(pb.ref, again.ref)
    _assert_rel([pb.test.loc["LRT", "stat"]], REF["anova_sleepstudy"]["Chisq"][1:], "LRT statistic")
    _assert_rel([pb.test.loc["LRT", "p.value"]], REF["anova_sleepstudy"]["p"][1:], "LRT p")
    assert 0 < pb.p_value <= 1
    # nothing simulated under the null comes near 42: p is (1 + 0) / (1 + #positive)
    assert pb.n_extreme == 0 and pb.p_value == pytest.approx(1 / (1 + pb.n_positive))
    assert "PBtest" in repr(pb)
    with pytest.raises(InferenceError, match="same number of parameters"):
        bm.pb_test(fm1, fm1, nsim=2)


def test_pb_test_null_distribution_of_a_fixed_effect_is_near_chisq1(sleep):
    small = bm.lmer("Reaction ~ 1 + (1 | Subject)", sleep, REML=False)
    large = bm.lmer("Reaction ~ Days + (1 | Subject)", sleep, REML=False)
    pb = _quiet(bm.pb_test, small, large, nsim=30, seed=3, n_jobs=1, progress=False)
    # the LRT statistic for one fixed effect is close to χ²₁ here: mean 1, SD of a 30-draw mean about 0.26
    assert 0.3 < np.mean(pb.ref) < 2.2
    assert np.all(pb.ref > -1e-6)


# --- exact restricted LRT (RLRsim) -------------------------------------------------------------------


def test_exact_rlrt_single_component(fm0):
    res = bm.exact_rlrt(fm0, nsim=2000, seed=1)
    # R: RLRsim::exactRLRT(lmer(Reaction ~ Days + (1 | Subject), sleepstudy))$statistic
    assert res.statistic == pytest.approx(107.1985781, rel=RTOL)
    assert res.p_value == 0.0
    again = bm.exact_rlrt(fm0, nsim=2000, seed=1)
    np.testing.assert_array_equal(res.sample, again.sample)
    # the null distribution has about half its mass at zero (RLRsim: 0.539 with 10000 draws);
    # its 95% quantile is near 2.4 (RLRsim: 2.38)
    assert 0.48 < np.mean(res.sample == 0) < 0.60
    assert 1.9 < np.quantile(res.sample, 0.95) < 2.9


def test_exact_rlrt_dyestuff_p_value():
    m = bm.lmer("Yield ~ 1 + (1 | Batch)", bm.load_dataset("Dyestuff"))
    res = bm.exact_rlrt(m, nsim=4000, seed=2)
    # R: RLRsim::exactRLRT(lmer(Yield ~ 1 + (1|Batch), Dyestuff)): RLRT = 6.368955, p-value ≈ 0.004
    assert res.statistic == pytest.approx(6.368955314, rel=RTOL)
    assert 0.001 < res.p_value < 0.012


def test_exact_rlrt_with_nuisance_components(sleep, fm0):
    m_alt = bm.lmer("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", sleep)
    m_slope = bm.lmer("Reaction ~ Days + (0 + Days | Subject)", sleep)
    res = bm.exact_rlrt(m_slope, m_alt, fm0, nsim=500, seed=3)
    # R: RLRsim::exactRLRT(m.slope, mA, m0)$statistic
    assert res.statistic == pytest.approx(42.79579181, rel=RTOL)
    assert res.p_value == 0.0


def test_exact_rlrt_refuses_what_it_cannot_test(fm0, fm1, cbpp_fits):
    with pytest.raises(InferenceError, match="single scalar random effect"):
        bm.exact_rlrt(fm1)
    with pytest.raises(InferenceError, match="give both"):
        bm.exact_rlrt(fm0, m_alt=fm1)
    with pytest.raises(InferenceError, match="linear mixed models"):
        bm.exact_rlrt(cbpp_fits[0])
    with pytest.raises(InferenceError, match="single\\s+variance|differ by 2"):
        bm.exact_rlrt(fm0, fm1, fm0)


def test_rlrt_null_sample_for_balanced_anova_matches_known_mass_at_zero():
    m = bm.lmer("Yield ~ 1 + (1 | Batch)", bm.load_dataset("Dyestuff"))
    sample = rlrt_null_sample(m, nsim=3000, seed=9)
    # RLRsim on Dyestuff: 0.5616 of 10000 simulated values are zero
    assert 0.52 < np.mean(sample == 0) < 0.60
