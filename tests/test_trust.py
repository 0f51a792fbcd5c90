"""Trust (issue 12): hard fits lme4 completes, lme4's special cases, checks before any work,
convergence diagnostics with lme4's meaning, pickled results, interrupted worker pools.

References: tests/reference/issues/hard_fits.json (lme4 1.1-31, made by
tests/reference/issues/make_issues.R; see its README.md). Tolerances are the project's
(tests/conftest.py): GLMM fixed effects within 2e-2 of lme4's SE, SDs 2e-2 relative, the
criterion no worse than lme4's.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import GLMM, LMM, assert_criterion_not_worse, assert_within

import bayesmix as bm
from bayesmix.results.lmer import LmerResult
from bayesmix.errors import ConvergenceWarning, DataWarning, FamilyError, FitError, PirlsError, SingularFitWarning

ISSUES = Path(__file__).parent / "reference" / "issues"


@lru_cache(maxsize=None)
def _hard() -> dict:
    return json.loads((ISSUES / "hard_fits.json").read_text())


def hard(key: str) -> dict:
    return _hard()[key]


@lru_cache(maxsize=None)
def _issues_data(name: str) -> pd.DataFrame:
    schema = json.loads((ISSUES / "data" / f"{name}.schema.json").read_text())
    factors = {c["name"]: c for c in schema["columns"] if c["type"] in ("factor", "ordered")}
    frame = pd.read_csv(ISSUES / "data" / f"{name}.csv", dtype={n: str for n in factors})
    for col, spec in factors.items():
        frame[col] = pd.Categorical(frame[col], categories=spec["levels"])
    return frame


def issues_data(name: str) -> pd.DataFrame:
    return _issues_data(name).copy()


def fit_hard(case: dict):
    """Fit a hard_fits case as R did; returns the model and the warnings it raised."""
    data = issues_data(case["dataset"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if case["family"] == "gaussian":
            m = bm.lmer(case["formula"], data, REML=case["REML"])
        else:
            m = bm.glmer(case["formula"], data, family=case["family"])
    return m, caught


def lme4_criterion(case: dict) -> float:
    return case["reml_criterion"] if case["family"] == "gaussian" and case["REML"] else case["minus2loglik"]


# --- 1. PIRLS robustness: fits lme4 completes --------------------------------------------


@pytest.mark.parametrize("key", ["poisson15", "poisson15_gaussian_log", "poisson15_offset"])
def test_glmm_that_failed_from_a_warm_start_matches_lme4(key):
    """The issue's 15-row Poisson data raised PirlsError (one failed warm start failed every later
    evaluation); lme4: intercept 5.2040, SD 0.8182. Also with gaussian(log) and an offset."""
    case = hard(key)
    m, caught = fit_hard(case)
    assert_criterion_not_worse(m.criterion_value, case["minus2loglik"])
    se = np.asarray(case["se"])
    assert_within(m.fixef.to_numpy(), case["fixef"], GLMM.fixef_se * se, "fixef")
    sd_ref = np.array([r["sdcor"] for r in case["varcorr"]])
    assert_within(m.varcorr["sdcor"].to_numpy(), sd_ref, GLMM.rel * sd_ref, "VarCorr sdcor")
    assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)]  # lme4: no messages


def test_poisson_with_identical_groupings_reaches_lme4s_criterion():
    """``yp ~ 1 + (1 + x1 | g) + (1 + x2 | g2)``, g2 ≡ g: bayesmix stopped 3.5e-3 worse in −2logLik."""
    case = hard("unident_poisson_identical_groupings")
    m, caught = fit_hard(case)
    assert_criterion_not_worse(m.criterion_value, case["minus2loglik"])
    assert_within(m.fixef.to_numpy(), case["fixef"], GLMM.fixef_se * np.asarray(case["se"]), "fixef")
    assert m.singular == case["singular"]
    assert [w for w in caught if issubclass(w.category, SingularFitWarning)]


def _objective(formula="y ~ 1 + (1 | g)", family="poisson"):
    from bayesmix.engine.families import get_family
    from bayesmix.engine.glmm import GlmmObjective
    from bayesmix.spec.model import compile_model

    return GlmmObjective(compile_model(formula, issues_data("pois15")), get_family(family))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the poisoned start overflows, as it is meant to
def test_a_failed_warm_start_is_retried_cold():
    obj = _objective()
    cold = obj.pirls(np.array([0.8]))
    obj._u_warm = np.full_like(obj._u_warm, 400.0)  # a warm start that overflows the Poisson mean
    obj._beta_warm = np.array([300.0])
    state = obj.pirls(np.array([0.8]))
    np.testing.assert_allclose(state.u, cold.u, atol=1e-7)
    assert obj.laplace(state) == pytest.approx(obj.laplace(cold), abs=1e-8)
    np.testing.assert_array_equal(obj._u_warm, state.u)  # the success is the next warm start


def test_a_failed_evaluation_never_becomes_the_warm_start(monkeypatch):
    obj = _objective()
    obj.pirls(np.array([0.8]))
    warm_u, warm_beta = obj._u_warm.copy(), obj._beta_warm.copy()

    def always_fails(theta, beta, u, cold, beta0=None):
        raise PirlsError("diverged", theta=theta, iteration=3, reason="diverged")

    monkeypatch.setattr(obj, "_pirls_from", always_fails)
    with pytest.raises(PirlsError, match="a warm start failed too"):
        obj.pirls(np.array([2.0]))
    assert obj.theta_only(np.array([2.0])) == np.inf  # a failed evaluation counts as failed
    np.testing.assert_array_equal(obj._u_warm, warm_u)
    np.testing.assert_array_equal(obj._beta_warm, warm_beta)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_final_pirls_failure_explains_itself():
    """θ, the iteration, and what diverged (here the identity-link Poisson mean goes negative)."""
    x = np.tile(np.arange(10.0), 6)
    data = pd.DataFrame({"y": np.where(x < 5, 50, 0), "x": x, "g": np.repeat([f"g{i}" for i in range(6)], 10)})
    with pytest.raises(PirlsError, match=r"PIRLS failed at theta = \[1\.\], iteration \d+: .*working weights "
                                         r"not positive.*linear predictor in \[") as info:
        bm.glmer("y ~ x + (1 | g)", data, family="poisson(identity)")
    assert info.value.theta.tolist() == [1.0] and info.value.iteration >= 1 and "working weights" in info.value.reason
    again = pickle.loads(pickle.dumps(info.value))  # worker processes send it back whole
    assert again.iteration == info.value.iteration and str(again) == str(info.value)


# --- 2. lme4's special cases ---------------------------------------------------------------


def test_glmer_gaussian_identity_is_lmer_with_a_warning():
    ref = hard("glmer_gaussian")
    sleep = bm.load_dataset("sleepstudy")
    with pytest.warns(FutureWarning, match=r"calling glmer\(\) with family=gaussian \(identity link\) as a "
                                           r"shortcut to lmer\(\) is deprecated; please call lmer\(\) directly"):
        m = bm.glmer("Reaction ~ Days + (Days | Subject)", sleep, family="gaussian")
    assert isinstance(m, LmerResult) and ref["glmer_result_class"] == "lmerMod"
    assert m.method == "REML" and ref["glmer_result_isREML"]
    case = ref["glmer_result"]
    assert_criterion_not_worse(m.criterion_value, case["reml_criterion"], "REML criterion")
    assert_within(m.fixef.to_numpy(), case["fixef"], LMM.fixef_se * np.asarray(case["se"]), "fixef")
    assert_within(m.sigma, case["sigma"], LMM.rel * case["sigma"], "sigma")


@pytest.mark.parametrize("key, column, family", [("constant_poisson_all_zero", "y_zero", "poisson"),
                                                 ("constant_binomial_all_one", "y_one", "binomial")])
def test_constant_glmm_response_is_lme4s_error(key, column, family):
    assert hard(key)["fit_error"] == "Response is constant"
    with pytest.raises(bm.DataError, match="Response is constant"):
        bm.glmer(f"{column} ~ 1 + (1 | g)", issues_data("pois15"), family=family)


def test_constant_lmm_response_is_refused_not_a_finite_loglik():
    """lme4 returns sigma 0 and logLik Inf with warnings; bayesmix returned a finite logLik. It refuses."""
    case = hard("constant_lmer")
    assert case["sigma"] == 0 and case["loglik"] == "Inf"
    with pytest.raises(bm.DataError, match="Response is constant.*residual SD would be 0"):
        bm.lmer("y_const ~ 1 + (1 | g)", issues_data("pois15"))


def test_lmm_response_fitted_exactly_by_the_fixed_effects_is_refused():
    sleep = bm.load_dataset("sleepstudy")
    with pytest.raises(bm.DataError, match="fitted exactly by the fixed effects"):
        bm.lmer("y ~ Days + (1 | Subject)", sleep.assign(y=3.0 + 2.0 * sleep["Days"]))


# --- 3. checks before any work --------------------------------------------------------------


@pytest.fixture
def no_fitting(monkeypatch):
    import bayesmix.api

    def refuse(*args, **kwargs):
        raise AssertionError("fitting started before the input was rejected")

    monkeypatch.setattr(bayesmix.api, "fit_lmm", refuse)
    monkeypatch.setattr(bayesmix.api, "fit_glmm", refuse)


@pytest.fixture
def sleep():
    data = bm.load_dataset("sleepstudy")
    data["Days"] = data["Days"].astype(float)
    return data


FORMULA = "Reaction ~ Days + (1 | Subject)"


@pytest.mark.parametrize("value", ["no", None, 1, "FALSE"])
def test_reml_must_be_a_bool(sleep, no_fitting, value):
    with pytest.raises(bm.ArgumentError, match=f"REML must be True or False, got {value!r}"):
        bm.lmer(FORMULA, sleep, REML=value)


@pytest.mark.parametrize("nagq", [101, 1000, -1, 1.0, True])
def test_nagq_within_lme4s_limits(sleep, no_fitting, nagq):
    with pytest.raises(bm.ArgumentError, match=r"nAGQ must be a non-negative integer no larger than 100"):
        bm.glmer(FORMULA, sleep, family="poisson", nAGQ=nagq)


@pytest.mark.parametrize("family, match", [("poison", "unknown family 'poison'"),
                                           ("poisson(logit)", "link 'logit' is not available for the poisson"),
                                           (3, "family must be a name")])
def test_family_and_link_are_checked(sleep, no_fitting, family, match):
    with pytest.raises(FamilyError, match=match):
        bm.glmer(FORMULA, sleep, family=family)


@pytest.mark.parametrize("argument", ["weights", "offset"])
def test_weights_and_offset_of_the_wrong_length(sleep, no_fitting, argument):
    with pytest.raises(bm.ArgumentError, match=rf"{argument} has 10 values \(shape \(10,\)\) for 180 rows"):
        bm.lmer(FORMULA, sleep, **{argument: np.ones(10)})


@pytest.mark.parametrize("argument", ["weights", "offset"])
def test_infinite_weights_and_offset_are_refused(sleep, no_fitting, argument):
    with pytest.raises(bm.DataError, match=rf"'{argument}' \(as evaluated\) has 1 infinite value"):
        bm.lmer(FORMULA, sleep, **{argument: np.r_[np.inf, np.ones(179)]})


def test_all_zero_weights_are_refused(sleep, no_fitting):
    with pytest.raises(bm.DataError, match="weights are all zero"):
        bm.lmer(FORMULA, sleep, weights=np.zeros(180))


@pytest.mark.parametrize("column", ["Days", "Reaction"])
def test_infinite_values_are_refused_naming_column_and_rows(sleep, no_fitting, column):
    sleep.loc[[3, 7], column] = [np.inf, -np.inf]
    with pytest.raises(bm.DataError, match=rf"column '{column}' has 2 infinite values \(rows 3, 7\)"):
        bm.lmer(FORMULA, sleep)


def test_infinity_made_by_a_transform_is_refused(sleep, no_fitting):
    with pytest.raises(bm.DataError, match=r"'log\(Days\)' \(as evaluated\) has 18 infinite values"):
        bm.lmer("Reaction ~ log(Days) + (1 | Subject)", sleep)


def test_nan_made_by_a_transform_drops_the_rows_and_says_so(sleep):
    data = sleep.assign(x=np.where(sleep["Days"] > 2, sleep["Days"], -1.0))
    # the model frame drops them as R's na.omit does, naming the expression that made them
    with pytest.warns(DataWarning, match=r"54 rows with missing values removed \(missing in log\(x\): 54\)"):
        m = bm.lmer("Reaction ~ log(x) + (1 | Subject)", data)
    kept = data[data["x"] > 0].assign(lx=lambda d: np.log(d["x"]))
    ref = bm.lmer("Reaction ~ lx + (1 | Subject)", kept)
    assert m.nobs == 126 and m.compiled.n_dropped == 54
    np.testing.assert_allclose(m.fixef.to_numpy(), ref.fixef.to_numpy(), rtol=1e-10)


def test_complex_column_is_refused(sleep, no_fitting):
    with pytest.raises(bm.DataError, match="column 'Days' holds complex numbers"):
        bm.lmer(FORMULA, sleep.assign(Days=sleep["Days"] + 1j))


def test_object_column_of_numbers_is_numeric(sleep):
    """It used to become a factor silently (9 dummy columns)."""
    m = bm.lmer(FORMULA, sleep.assign(Days=sleep["Days"].astype(object)))
    ref = bm.lmer(FORMULA, sleep)
    assert list(m.fixef.index) == ["(Intercept)", "Days"]
    np.testing.assert_allclose(m.fixef.to_numpy(), ref.fixef.to_numpy(), rtol=1e-10)


def test_object_column_of_mixed_types_is_refused(sleep, no_fitting):
    days = sleep["Days"].astype(object)
    days[0] = "zero"
    with pytest.raises(bm.DataError, match=r"column 'Days' mixes kinds of values \(number, string\)"):
        bm.lmer(FORMULA, sleep.assign(Days=days))


def test_unused_odd_columns_do_not_matter(sleep):
    bm.lmer(FORMULA, sleep.assign(z=1j, mixed=[1, "a"] * 90, Day=np.inf))


@pytest.fixture(scope="module")
def sleep_fit():
    return bm.lmer("Reaction ~ Days + (Days | Subject)", bm.load_dataset("sleepstudy"))


def test_predict_newdata_without_rows(sleep_fit):
    with pytest.raises(bm.DataError, match="newdata has no rows"):
        sleep_fit.predict(newdata=bm.load_dataset("sleepstudy").iloc[:0])


def test_predict_newdata_not_a_frame(sleep_fit):
    with pytest.raises(bm.DataError, match="newdata must be a pandas DataFrame, got list"):
        sleep_fit.predict(newdata=[1, 2])


def test_predict_missing_grouping_value(sleep_fit):
    """A missing group gets the population-level prediction, as an unseen level does (lme4's
    allow.new.levels = TRUE, documented in predict); the other rows keep their random effects."""
    new = bm.load_dataset("sleepstudy").iloc[:3].astype({"Subject": object})
    new.loc[1, "Subject"] = np.nan
    population = sleep_fit.predict(newdata=new, re_form="~0")
    np.testing.assert_allclose(population, sleep_fit.fixef.iloc[0] + sleep_fit.fixef.iloc[1] * new["Days"])
    conditional = sleep_fit.predict(newdata=new)
    assert conditional[1] == pytest.approx(population[1], rel=1e-12)
    np.testing.assert_allclose(conditional[[0, 2]], sleep_fit.fitted()[[0, 2]], rtol=1e-10)


def test_predict_re_form_naming_a_term_the_model_lacks(sleep_fit):
    with pytest.raises(bm.DataError, match=r"re_form names random-effects term\(s\) \(1 \| Foo\) the model does "
                                           r"not have; its terms are \(Days \| Subject\)"):
        sleep_fit.predict(re_form="~(1 | Foo)")


def test_a_non_finite_fit_is_an_error_not_a_result():
    """results.builder refuses an engine result with a non-finite criterion or estimate."""
    from dataclasses import replace

    from bayesmix.engine.fit import fit_lmm
    from bayesmix.results.builder import build_lmer
    from bayesmix.spec.model import compile_model

    compiled = compile_model(FORMULA, bm.load_dataset("sleepstudy"))
    fit = fit_lmm(compiled)
    build_lmer(compiled, fit)
    with pytest.raises(FitError, match=r"without a finite criterion.*\(criterion nan\)"):
        build_lmer(compiled, replace(fit, criterion=np.nan))
    with pytest.raises(FitError, match="without a finite criterion or finite estimates"):
        build_lmer(compiled, replace(fit, beta=np.array([np.nan, 1.0])))


@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_an_lmm_whose_criterion_overflows_is_an_error(scale):
    """A response scaled to 1e±200 overflows the deviance: a FitError naming θ, not an AttributeError."""
    sleep = bm.load_dataset("sleepstudy")
    with pytest.raises(FitError, match=r"without a finite criterion \(criterion inf, theta = \[1\.0\]\)"):
        bm.lmer(FORMULA, sleep.assign(Reaction=sleep["Reaction"] * scale))


# --- 4. convergence diagnostics -------------------------------------------------------------


def _convergence_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]


def test_identical_groupings_degenerate_hessian_as_lme4():
    """lme4: "unable to evaluate scaled gradient", "degenerate Hessian with 1 negative eigenvalues"."""
    case = hard("unident_identical_groupings")
    m, caught = fit_hard(case)
    assert case["convergence"]["lme4_messages"] == ["unable to evaluate scaled gradient",
                                                    "Model failed to converge: degenerate  Hessian with 1 negative "
                                                    "eigenvalues"]
    assert_criterion_not_worse(m.criterion_value, case["reml_criterion"])
    expected = ["unable to evaluate scaled gradient", "Model failed to converge: degenerate Hessian with 1 negative "
                                                      "eigenvalue"]
    assert m.optsum.messages == expected
    assert _convergence_warnings(caught) == expected
    assert "degenerate Hessian" in str(m.summary())
    # only the sum of the two variances is identified: it matches lme4's
    ours, ref = np.sum(m.theta.to_numpy() ** 2), np.sum(np.asarray(case["theta"]) ** 2)
    assert abs(ours - ref) <= 2 * (2 * LMM.rel) * ref


def test_fixed_effect_equal_to_grouping_factor_is_flagged():
    """The REML criterion does not depend on θ at all: lme4 stops at θ = 0 (singular); bayesmix
    stops where it started and must say the parameter is not determined."""
    case = hard("unident_fixed_equals_group")
    m, caught = fit_hard(case)
    assert case["singular"] and case["convergence"]["lme4_messages"] == ["boundary (singular) fit: see help('isSingular')"]
    assert_criterion_not_worse(m.criterion_value, case["reml_criterion"])
    assert_within(m.fixef.to_numpy(), case["fixef"], LMM.fixef_se * np.asarray(case["se"]), "fixef")
    warned = _convergence_warnings(caught) + [str(w.message) for w in caught if issubclass(w.category, SingularFitWarning)]
    assert warned == ["Hessian is numerically singular: parameters are not uniquely determined"] or m.singular


def test_slope_constant_within_group_is_singular_only_as_lme4():
    case = hard("unident_slope_constant_within_group")
    m, caught = fit_hard(case)
    assert_criterion_not_worse(m.criterion_value, case["reml_criterion"])
    assert m.singular and case["singular"]
    assert not _convergence_warnings(caught)  # lme4 skips the gradient and Hessian checks for singular fits
    assert m.optsum.messages == []


def test_ordinary_fit_has_no_convergence_messages(sleep_fit):
    assert sleep_fit.optsum.messages == [] and sleep_fit.optsum.hessian is not None


def test_badly_scaled_covariate_is_nearly_unidentifiable_as_lme4(fits):
    """grouseticks with the raw HEIGHT (lme4's example centres it): lme4 warns "very large
    eigenvalue" and "large eigenvalue ratio" - Rescale variables? (icc_r2.json); centred, nothing."""
    ref = json.loads((ISSUES / "icc_r2.json").read_text())["grouseticks_poisson_uncentered"]
    lme4 = [m.replace("\n - ", " - ") for m in ref["convergence"]["lme4_messages"]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = bm.glmer(ref["formula"], bm.load_dataset("grouseticks"), family="poisson")
    expected = ["Model is nearly unidentifiable: very large eigenvalue - Rescale variables?",
                "Model is nearly unidentifiable: large eigenvalue ratio - Rescale variables?"]
    assert set(expected) <= set(lme4)  # lme4 also found its gradient 0.003 short of the optimum
    assert m.optsum.messages == expected and _convergence_warnings(caught) == expected
    assert_within(m.fixef.to_numpy(), ref["fixef"], 1e-3 * np.abs(ref["fixef"]), "fixef")
    centred = fits("grouseticks_poisson")
    assert centred.model.optsum.messages == [] and not _convergence_warnings(centred.warnings)


def test_convergence_messages_follow_lme4s_checkconv():
    from bayesmix.engine.optimize import convergence_messages

    H = np.diag([4.0, 1.0])
    assert convergence_messages(np.array([1e-4, 1e-4]), H, 2) == []
    # lme4: max over parameters of min(|solve(chol(H), g)|, |g|); here (0.05, 0)
    assert convergence_messages(np.array([0.1, 0.0]), H, 2) == [
        "Model failed to converge with max|grad| = 0.05 (tol = 0.002, component 1)"]
    assert convergence_messages(np.zeros(2), np.diag([1.0, -1.0]), 2) == [
        "unable to evaluate scaled gradient", "Model failed to converge: degenerate Hessian with 1 negative eigenvalue"]
    assert convergence_messages(np.zeros(2), np.diag([1.0, 1e-9]), 2) == [
        "Hessian is numerically singular: parameters are not uniquely determined"]
    assert convergence_messages(np.zeros(2), np.diag([100.0, 5e-5]), 2) == [
        "Model is nearly unidentifiable: large eigenvalue ratio - Rescale variables?"]
    assert convergence_messages(np.zeros(2), np.diag([1e7, 1e2]), 1) == [
        "Model is nearly unidentifiable: very large eigenvalue - Rescale variables?"]
    # a fixed-effect block is checked on its own first, as lme4 does
    assert convergence_messages(np.zeros(2), np.diag([1.0, 1e-9]), 1) == [
        "Fixed-effect Hessian is numerically singular: parameters are not uniquely determined",
        "Hessian is numerically singular: parameters are not uniquely determined"]
    assert convergence_messages(None, None, 1) == [
        "unable to evaluate scaled gradient", "Problem with Hessian check (infinite or missing values?)"]


# --- 5. pickling ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lmer", "glmer"])
def test_results_survive_pickling(kind):
    if kind == "lmer":
        m = bm.lmer("Reaction ~ Days + (Days | Subject)", bm.load_dataset("sleepstudy"))
        new = bm.load_dataset("sleepstudy").iloc[[0, 5, 10]]
    else:
        m = bm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", bm.load_dataset("cbpp"),
                     family="binomial")
        new = bm.load_dataset("cbpp").iloc[[0, 5, 10]]
    again = pickle.loads(pickle.dumps(m))
    assert str(again.summary()) == str(m.summary())
    np.testing.assert_array_equal(again.predict(newdata=new), m.predict(newdata=new))
    pd.testing.assert_frame_equal(again.confint(method="Wald"), m.confint(method="Wald"))


# --- 6. interrupts ----------------------------------------------------------------------------

_INTERRUPTED = textwrap.dedent("""
    import multiprocessing, sys, threading, time
    import bayesmix as bm
    from bayesmix.inference.parametric_bootstrap import bootstrap, sdcor_and_fixef

    m = bm.lmer("Reaction ~ Days + (Days | Subject)", bm.load_dataset("sleepstudy"))

    def slow(fit):  # a chunk of 50 refits takes 25 s: waiting for running chunks is not prompt
        time.sleep(0.5)
        return sdcor_and_fixef(fit)

    def report():
        while not multiprocessing.active_children():
            time.sleep(0.05)
        time.sleep(0.5)
        print("WORKERS", *[p.pid for p in multiprocessing.active_children()], flush=True)

    threading.Thread(target=report, daemon=True).start()
    try:
        bootstrap(m, slow, nsim=100000, seed=1, n_jobs=2, progress=False)
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
        sys.exit(3)
""")


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find orphaned workers")
def test_one_ctrl_c_stops_bootstrap_workers():
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", _INTERRUPTED], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("WORKERS"), line + proc.stderr.read()
        workers = [int(p) for p in line.split()[1:]]
        assert len(workers) == 2
        os.kill(proc.pid, signal.SIGINT)  # to the parent alone (a terminal sends it to the group: both must work)
        start = time.monotonic()
        out, err = proc.communicate(timeout=30)
        assert time.monotonic() - start < 8, "the interrupt was not prompt"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 3 and "INTERRUPTED" in out, err
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if _alive(pid)], "orphaned worker processes"


# --- Bayesian side: which model a posterior belongs to, pickling, interrupted sampling ---------


@pytest.fixture(scope="module")
def dyestuff_posterior():
    m = bm.lmer("Yield ~ 1 + (1 | Batch)", bm.load_dataset("Dyestuff"))
    return m, m.sample(draws=30, tune=30, chains=1, random_seed=1, progressbar=False)


def test_compare_refuses_a_posterior_of_another_model(dyestuff_posterior):
    m, post = dyestuff_posterior
    assert len(bm.compare(m, post)) == 3  # its own posterior: fine
    other_data = bm.lmer("Yield ~ 1 + (1 | Batch)", bm.load_dataset("Dyestuff2"))
    with pytest.raises(bm.ArgumentError, match=r"sampled from another model or other data \(Yield ~ 1 \+ \(1 \| Batch\)\)"):
        bm.compare(other_data, post)
    ml_refit = bm.lmer("Yield ~ 1 + (1 | Batch)", bm.load_dataset("Dyestuff"), REML=False)
    assert len(bm.compare(ml_refit, post)) == 3  # the same model and data, estimated by ML: the same posterior


@pytest.mark.parametrize("kwargs, match", [({"ci_prob": 1.5}, "ci_prob must be a probability strictly between 0 and 1, got 1.5"),
                                           ({"wald_level": "95%"}, "wald_level must be a probability"),
                                           ({"posterior": {"beta": 1}}, "expected the posterior returned by sample")])
def test_compare_arguments_are_checked(dyestuff_posterior, kwargs, match):
    m, post = dyestuff_posterior
    kwargs = {"posterior": post, **kwargs}
    with pytest.raises(bm.ArgumentError, match=match):
        bm.compare(m, **kwargs)


def test_results_pickle_after_pymc_model_and_sample(dyestuff_posterior):
    m, post = dyestuff_posterior
    m.pymc_model  # noqa: B018 - touched, as the issue's report did
    again = pickle.loads(pickle.dumps(m))
    assert str(again.summary()) == str(m.summary())
    assert len(bm.compare(again, post)) == 3  # the fingerprint survives the round trip
    assert again.pymc_model is not None  # the cache left behind is rebuilt on use


def test_interrupted_nutpie_sampling_stops_and_raises():
    """nutpie's blocking call returns the draws made so far on Ctrl-C, a silently truncated posterior;
    bayesmix waits itself, cancels every chain and re-raises."""
    from bayesmix.bayes.sampling import _wait_or_stop

    class Sampler:
        cancelled = False

        def wait(self):
            raise KeyboardInterrupt

        def cancel(self):
            self.cancelled = True

    sampler = Sampler()
    with pytest.raises(KeyboardInterrupt):
        _wait_or_stop(sampler)
    assert sampler.cancelled


_INTERRUPTED_SAMPLING = textwrap.dedent("""
    import sys
    import bayesmix as bm

    m = bm.lmer("Yield ~ 1 + (1 | Batch)", bm.load_dataset("Dyestuff"))
    m.sample(draws=20, tune=20, chains=1, progressbar=False)  # imports and compiles
    print("SAMPLING", flush=True)
    try:
        post = m.sample(draws=2_000_000, tune=100, chains=2, progressbar=False)
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
        sys.exit(3)
    print("RETURNED", dict(post["posterior"].sizes), flush=True)
""")


@pytest.mark.slow  # imports PyMC and nutpie in a fresh process (a minute on a loaded machine)
def test_one_ctrl_c_stops_nutpie_sampling():
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", _INTERRUPTED_SAMPLING], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().startswith("SAMPLING")
        time.sleep(2)  # inside nutpie's wait
        os.kill(proc.pid, signal.SIGINT)
        start = time.monotonic()
        out, err = proc.communicate(timeout=60)
        assert time.monotonic() - start < 10, "the interrupt was not prompt"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3 and "INTERRUPTED" in out, out + err


def test_interrupt_during_pymc_sampling_stops_every_chain():
    """PyMC swallows KeyboardInterrupt and (sequentially) goes on with the next chain: bayesmix's
    handler remembers it, PyMC's callback stops each later chain, and the caller re-raises."""
    from bayesmix.bayes.sampling import _Interrupt

    before = signal.getsignal(signal.SIGINT)
    interrupt = _Interrupt()
    with pytest.raises(KeyboardInterrupt), interrupt:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the handler raises here
    assert interrupt.seen
    with pytest.raises(KeyboardInterrupt):
        interrupt.callback(None, None)  # the next chain's first draw stops it
    assert signal.getsignal(signal.SIGINT) is before


_INTERRUPTED_PYMC = _INTERRUPTED_SAMPLING.replace("chains=1, progressbar=False)", "chains=1, progressbar=False, "
                                                  "sampler='pymc')").replace(
    "chains=2, progressbar=False)", "chains=4, progressbar=False, sampler='pymc')")


@pytest.mark.slow  # imports PyMC in a fresh process and compiles its model
def test_one_ctrl_c_stops_pymc_sampling():
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", _INTERRUPTED_PYMC], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        assert proc.stdout.readline().startswith("SAMPLING")
        time.sleep(5)  # inside PyMC's sampling loop
        os.killpg(proc.pid, signal.SIGINT)  # once, to the whole group, as a terminal does
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 3 and "INTERRUPTED" in out, out + err
