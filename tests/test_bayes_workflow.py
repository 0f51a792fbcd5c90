"""The Bayesian workflow after sampling: ArviZ labels, one PyMC model, log-likelihood and LOO,
posterior predictions and predictive checks, frequentist intervals, tidy tables.

One posterior per model for the whole module (2 chains × 200 draws: the checks are identities
or comparisons well inside Monte Carlo error at that size).
"""

from __future__ import annotations

import logging
import pickle
import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

import bayesmix as bm
from bayesmix.errors import ArgumentError

pm = pytest.importorskip("pymc")
az = pytest.importorskip("arviz")


@pytest.fixture(scope="module")
def sleep():
    return bm.load_dataset("sleepstudy")


@pytest.fixture(scope="module")
def slope(sleep):
    m = bm.lmer("Reaction ~ Days + (Days | Subject)", data=sleep)
    return m, m.sample(draws=200, tune=200, chains=2, random_seed=7, progressbar=False, log_likelihood=True)


@pytest.fixture(scope="module")
def intercept(sleep):
    m = bm.lmer("Reaction ~ Days + (1 | Subject)", data=sleep)
    return m, m.sample(draws=200, tune=200, chains=2, random_seed=7, progressbar=False, log_likelihood=True)


@pytest.fixture(scope="module")
def cbpp():
    g = bm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", data=bm.load_dataset("cbpp"),
                 family="binomial")
    return g, g.sample(draws=200, tune=200, chains=2, random_seed=7, progressbar=False)


# --- ArviZ labels (issue 13 item 8) -------------------------------------------------------------------


def _row_value(posterior, label: str) -> float:
    match = re.fullmatch(r"([^\[]+)(?:\[(.*)\])?", label)
    var = posterior[match.group(1)]
    items = match.group(2).split(", ") if match.group(2) else []
    selection = dict(zip(var.dims[2:], items))
    return float(var.sel(selection).mean(("chain", "draw")))


def test_az_summary_labels_every_row_with_its_own_value(slope):
    """arviz-stats mislabelled b_Subject's rows when sd_Subject shared its coefficient dimension."""
    _, post = slope
    summary = az.summary(post, round_to="none", kind="stats")
    assert len(summary) == 2 + 1 + 2 + 1 + 4 + 36 + 36 + 3  # beta, sigma, sd, corr, corr_chol, b, u, theta
    for label, mean in summary["mean"].items():
        assert mean == pytest.approx(_row_value(post["posterior"], label), rel=1e-12, abs=1e-12), label
    b = post["posterior"]["b_Subject"]
    assert summary.loc["b_Subject[309, Days]", "mean"] == pytest.approx(float(b.sel(Subject="309", Subject_coef="Days").mean()))


def test_every_variable_has_dimension_names_of_its_own(slope):
    """No dimension is shared by two variables except in the same leading positions (u and b)."""
    _, post = slope
    p = post["posterior"]
    assert p["sd_Subject"].dims == ("chain", "draw", "sd_Subject_coef")
    assert p["corr_chol_Subject"].dims == ("chain", "draw", "corr_chol_Subject_row", "corr_chol_Subject_col")
    assert p["u_Subject"].dims == p["b_Subject"].dims == ("chain", "draw", "Subject", "Subject_coef")


def test_compare_and_tidy_tables_display_rounded(slope):
    m, post = slope
    table = bm.compare(m, post)
    shown = table.rounded()
    assert shown.loc["beta[Days]", "estimate"] == pytest.approx(10.47)
    assert table.loc["beta[Days]", "estimate"] == m.fixef["Days"]  # the values keep full precision
    assert "10.47<" in table._repr_html_() and "10.467285" not in table._repr_html_()


def test_tidy_ran_vals_of_a_fit_are_ranef_and_condvar(slope):
    m, _ = slope
    t = m.tidy()
    assert list(t.columns) == ["effect", "group", "level", "term", "estimate", "std.error"]
    assert len(t) == 36 and list(t["term"][:18]) == ["(Intercept)"] * 18  # term by term, as broom.mixed
    row = t[(t["level"] == "309") & (t["term"] == "Days")].iloc[0]
    assert row["estimate"] == m.ranef["Subject"].loc["309", "Days"]
    condvar = m.ranef_condvar()["Subject"]
    assert row["std.error"] == pytest.approx(np.sqrt(condvar[1, 1, 1]), rel=1e-12)
    fixed = m.tidy("fixed")
    np.testing.assert_allclose(fixed["std.error"], m.se.to_numpy(), rtol=1e-12)
    with pytest.raises(ArgumentError, match="effects must be one of"):
        m.tidy("random")


def test_tidy_ran_vals_of_a_posterior_are_its_mean_and_sd(slope):
    m, post = slope
    t = m.tidy(post=post)
    b = post["posterior"]["b_Subject"].sel(Subject="310", Subject_coef="(Intercept)")
    row = t[(t["level"] == "310") & (t["term"] == "(Intercept)")].iloc[0]
    assert row["estimate"] == pytest.approx(float(b.mean()), rel=1e-12)
    assert row["std.error"] == pytest.approx(float(b.std()), rel=1e-12)


# --- one model (item 2) ------------------------------------------------------------------------------


def test_pymc_model_is_new_at_every_call_with_data_and_named_predictors(slope):
    m, _ = slope
    first, second = m.pymc_model, m.pymc_model
    assert first is not second
    with first:
        pm.Normal("extra", 0.0, 1.0)
    assert "extra" not in second.named_vars and "extra" not in m.pymc_model.named_vars
    assert {d.name for d in first.deterministics} >= {"eta", "mu", "b_Subject", "corr_Subject", "theta"}
    assert set(first.data_vars_names if hasattr(first, "data_vars_names") else
               [v.name for v in first.data_vars]) == {"X", "offset", "Z_Subject", "idx_Subject"}
    assert first.named_vars_to_dims["eta"] == ("obs",) and first.named_vars_to_dims["y"] == ("obs",)
    point = {"beta": m.beta_values, "sigma": m.sigma, "sd_Subject": np.sqrt(np.diag(m.term_covariances()[0])),
             "corr_chol_Subject": np.eye(2), "u_Subject": np.zeros((18, 2))}
    eta = pm.do(first, point)["eta"].eval()
    np.testing.assert_allclose(eta, m.compiled.X @ m.beta_values, rtol=1e-12)
    priors = {"sigma": bm.Prior("HalfNormal", sigma=50.0)}
    assert "sigma" in m.to_pymc(priors=priors).named_vars


def test_fit_stays_picklable_after_pymc_model_and_sample(slope):
    m, _ = slope
    assert m.pymc_model is not None
    clone = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(clone.beta_values, m.beta_values)


def test_posterior_carries_every_free_variable_under_pymcs_names(slope, cbpp):
    for fit, post in (slope, cbpp):
        free = {rv.name for rv in fit.pymc_model.free_RVs}
        assert free <= set(post["posterior"].data_vars), free - set(post["posterior"].data_vars)
    _, post = slope
    p = post["posterior"]
    L = p["sd_Subject"].values[..., :, None] * p["corr_chol_Subject"].values
    b = np.einsum("cdlk,cdjk->cdlj", p["u_Subject"].values, L)
    np.testing.assert_allclose(b, p["b_Subject"].values, rtol=1e-10, atol=1e-10)


def test_pymcs_posterior_predictive_samples_only_y_and_agrees(slope, caplog):
    m, post = slope
    with caplog.at_level(logging.INFO, logger="pymc"):
        ppc = pm.sample_posterior_predictive(post, model=m.pymc_model, random_seed=1, progressbar=False)
    assert "Sampling: [y]" in caplog.text
    y = m.compiled.y
    theirs = ppc["posterior_predictive"]["y"].values.reshape(-1, len(y))
    ours = m.sample_posterior_predictive(post, random_seed=1)["posterior_predictive"]["y"].values.reshape(-1, len(y))
    r_theirs = np.mean([np.corrcoef(d, y)[0, 1] for d in theirs])
    r_ours = np.mean([np.corrcoef(d, y)[0, 1] for d in ours])
    assert abs(r_theirs - r_ours) < 0.01
    # the draws' mean follows the data (the posterior's random effects, not fresh ones from the prior)
    assert np.corrcoef(theirs.mean(0), y)[0, 1] > 0.9 and np.corrcoef(ours.mean(0), y)[0, 1] > 0.9
    np.testing.assert_allclose(theirs.mean(0), ours.mean(0), atol=4 * ours.std(0).max() / np.sqrt(len(ours)))


def test_ppc_group_is_what_arviz_plots_take(slope):
    pytest.importorskip("arviz_plots")
    import arviz_plots as azp
    import matplotlib

    matplotlib.use("Agg")
    m, post = slope
    m.sample_posterior_predictive(post, random_seed=2)
    assert post["posterior_predictive"]["y"].dims == ("chain", "draw", "obs")
    azp.plot_ppc_dist(post, num_samples=20)


# --- log-likelihood and LOO (item 3) ------------------------------------------------------------------


@pytest.mark.parametrize("which", ["slope", "cbpp"])
def test_log_likelihood_is_pymcs(which, request):
    fit, post = request.getfixturevalue(which)
    ours = fit.log_likelihood(post)["log_likelihood"]["y"].values
    theirs = pm.compute_log_likelihood(post, model=fit.pymc_model, extend_inferencedata=False, progressbar=False)
    np.testing.assert_allclose(ours, theirs["y"].values, rtol=1e-10, atol=1e-10)


@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto:UserWarning")
def test_loo_compare_ranks_the_random_slope_first(slope, intercept):
    ranked = az.compare({"(Days|Subject)": slope[1], "(1|Subject)": intercept[1]})
    assert list(ranked.index) == ["(Days|Subject)", "(1|Subject)"]
    assert ranked.loc["(1|Subject)", "elpd_diff"] < -ranked.loc["(1|Subject)", "dse"]
    assert az.loo(slope[1]).elpd == pytest.approx(ranked.loc["(Days|Subject)", "elpd"], abs=1.0)


def test_leave_one_group_out_log_likelihood_sums_each_subject(intercept):
    import copy

    m, post = intercept
    pointwise = post["log_likelihood"]["y"].values
    grouped = m.log_likelihood(copy.deepcopy(post), group="Subject")["log_likelihood"]["y"]
    assert grouped.dims == ("chain", "draw", "Subject") and grouped.shape == (2, 200, 18)
    np.testing.assert_allclose(grouped.sel(Subject="309").values, pointwise[..., 10:20].sum(-1), rtol=1e-12)
    with pytest.raises(ArgumentError, match="not a grouping factor"):
        m.log_likelihood(post, group="Days")


def test_cbpp_posterior_predictive_counts_agree_with_pymcs(cbpp):
    g, post = cbpp
    ours = g.sample_posterior_predictive(post, random_seed=3)["posterior_predictive"]["y"].values.reshape(400, -1)
    observed = post["observed_data"]["y"].values
    np.testing.assert_array_equal(observed, g.compiled.data["incidence"].to_numpy())
    theirs = pm.sample_posterior_predictive(post, model=g.pymc_model, random_seed=3, progressbar=False)
    theirs = theirs["posterior_predictive"]["y"].values.reshape(400, -1)
    assert np.all(ours <= g.compiled.data["size"].to_numpy()) and np.all(ours == np.round(ours))
    np.testing.assert_allclose(ours.mean(0), theirs.mean(0), atol=4 * ours.std(0).max() / np.sqrt(400))


# --- posterior predictions (item 1) ------------------------------------------------------------------


def test_posterior_predict_of_training_rows_is_beta_and_b(slope, sleep):
    m, post = slope
    mu = m.predict(post)
    assert mu.dims == ("chain", "draw", "obs") and mu.shape == (2, 200, 180)
    p = post["posterior"]
    draw = p.isel(chain=1, draw=5)
    b = draw["b_Subject"].values[m.compiled.terms[0].factor.codes]
    expected = m.compiled.X @ draw["beta"].values + np.sum(m.compiled.terms[0].columns * b, axis=1)
    np.testing.assert_allclose(mu.isel(chain=1, draw=5).values, expected, rtol=1e-12)
    # new data coded as the fit's own predict codes them: the training rows give the same draws
    np.testing.assert_allclose(m.predict(post, newdata=sleep.iloc[[0, 17, 100]]).values, mu.values[:, :, [0, 17, 100]],
                               rtol=1e-10)
    population = m.predict(post, re_form="~0")
    np.testing.assert_allclose(population.isel(chain=0, draw=0).values, m.compiled.X @ p["beta"].values[0, 0], rtol=1e-12)


def test_new_levels_get_the_population_or_fresh_effects(slope):
    m, post = slope
    new = pd.DataFrame({"Days": [3.0, 3.0], "Subject": ["999", "308"]})
    plain = m.predict(post, newdata=new)
    population = m.predict(post, newdata=new[["Days"]], re_form="~0")
    np.testing.assert_allclose(plain.values[..., 0], population.values[..., 0], rtol=1e-12)
    fresh = m.predict(post, newdata=new, sample_new_groups=True, random_seed=3)
    np.testing.assert_allclose(fresh.values[..., 1], plain.values[..., 1], rtol=1e-12)  # a seen level: unchanged
    # Var(η_new) = Var(x β) + E[z' Σ z]: the draws' spread for the new subject
    p = post["posterior"]
    sd, r = p["sd_Subject"].values, p["corr_Subject"].values[..., 0]
    z_sigma_z = sd[..., 0] ** 2 + 9 * sd[..., 1] ** 2 + 6 * r * sd[..., 0] * sd[..., 1]
    expected = population.values[..., 0].var() + z_sigma_z.mean()
    assert fresh.values[..., 0].var() == pytest.approx(expected, rel=0.25)


def test_posterior_response_draws_scatter_around_the_mean(slope):
    m, post = slope
    mu = m.predict(post, kind="mean")
    y = m.predict(post, kind="response", random_seed=4)
    resid = (y - mu).values
    assert abs(resid.mean()) < 3 * 26 / np.sqrt(resid.size)
    assert resid.std() == pytest.approx(float(post["posterior"]["sigma"].mean()), rel=0.05)
    with pytest.raises(ArgumentError, match="kind must be one of"):
        m.predict(post, kind="median")


# --- frequentist intervals (item 1) ------------------------------------------------------------------


def test_confidence_interval_is_wald_from_vcov(slope):
    m, _ = slope
    new = pd.DataFrame({"Days": [0.0, 4.5, 12.0], "Subject": ["308", "309", "999"]})
    ci = m.predict(new, interval="confidence", level=0.9)
    np.testing.assert_allclose(ci["fit"], m.predict(new), rtol=1e-12)
    X = np.column_stack([np.ones(3), new["Days"]])
    se = np.sqrt(np.einsum("ij,jk,ik->i", X, m.vcov_values, X))
    np.testing.assert_allclose(ci["upr"] - ci["fit"], norm.ppf(0.95) * se, rtol=1e-10)
    np.testing.assert_allclose(ci["fit"] - ci["lwr"], norm.ppf(0.95) * se, rtol=1e-10)


def test_population_prediction_interval_by_simulation(slope):
    """y_new = x β + z b + ε with β ~ N(β̂, V), b ~ N(0, Σ̂), ε ~ N(0, σ̂²): normal with the summed variances."""
    m, _ = slope
    new = pd.DataFrame({"Days": [2.0], "Subject": ["999"]})
    pi = m.predict(new, interval="prediction", nsim=40000, random_seed=5)
    x, z, cov = np.array([1.0, 2.0]), np.array([1.0, 2.0]), m.term_covariances()[0]
    sd = np.sqrt(x @ m.vcov_values @ x + z @ cov @ z + m.sigma**2)
    assert pi["upr"].iloc[0] - pi["fit"].iloc[0] == pytest.approx(norm.ppf(0.975) * sd, rel=0.02)
    assert pi["fit"].iloc[0] - pi["lwr"].iloc[0] == pytest.approx(norm.ppf(0.975) * sd, rel=0.02)


def test_todays_predict_calls_are_unchanged(slope, sleep):
    m, _ = slope
    new = sleep.iloc[[0, 17]]
    np.testing.assert_array_equal(m.predict(new, "~0"), m.predict(newdata=new, re_form="~0"))
    np.testing.assert_array_equal(m.predict(new), m.fitted()[[0, 17]])
    with pytest.raises(ArgumentError, match="interval must be"):
        m.predict(new, interval="credible")


# --- prior predictive (item 4) -----------------------------------------------------------------------


def test_prior_predictive_of_defaults_and_the_weakly_informative_preset(slope):
    m, _ = slope
    sy = np.std(m.compiled.y, ddof=1)
    flat = m.sample_prior_predictive(draws=400, random_seed=1)
    weak = m.sample_prior_predictive(draws=400, priors="weakly_informative", random_seed=1)
    assert {"prior", "prior_predictive"} <= set(flat.children)
    spread = {name: np.subtract(*np.percentile(tree["prior_predictive"]["y"].values, [95, 5]))
              for name, tree in (("flat", flat), ("weak", weak))}
    assert spread["flat"] > 200 * sy  # near-flat: outcomes spread over thousands of ms
    assert spread["weak"] < 30 * sy
    days_sd = np.std(m.compiled.X[:, 1], ddof=1)
    prior_days = weak["prior"]["beta"].values[..., 1].ravel()
    assert prior_days.std() == pytest.approx(2.5 * sy / days_sd, rel=0.15)
    with pytest.raises(bm.PriorError, match="unknown prior preset"):
        m.sample_prior_predictive(priors="vague")


# --- conditional effects (item 5) --------------------------------------------------------------------


def test_predictions_of_a_fit_are_population_means_with_wald_intervals(slope, cbpp):
    m, _ = slope
    table = bm.predictions(m, x="Days", n=4)
    days = np.linspace(0, 9, 4)
    np.testing.assert_allclose(table["Days"], days)
    np.testing.assert_allclose(table["estimate"], m.fixef["(Intercept)"] + m.fixef["Days"] * days, rtol=1e-12)
    X = np.column_stack([np.ones(4), days])
    se = np.sqrt(np.einsum("ij,jk,ik->i", X, m.vcov_values, X))
    np.testing.assert_allclose(table["upper"] - table["estimate"], norm.ppf(0.975) * se, rtol=1e-10)
    g, _ = cbpp
    by_period = bm.predictions(g, x="period")
    eta = g.fixef["(Intercept)"] + np.r_[0.0, g.fixef[["period2", "period3", "period4"]].to_numpy()]
    np.testing.assert_allclose(by_period["estimate"], 1 / (1 + np.exp(-eta)), rtol=1e-10)
    assert np.all(by_period["lower"] < by_period["estimate"]) and np.all(by_period["estimate"] < by_period["upper"])


def test_predictions_by_a_factor_and_from_a_posterior(slope, sleep):
    data = sleep.assign(late=pd.Categorical(np.where(sleep["Days"] >= 5, "late", "early")))
    m = bm.lmer("Reaction ~ Days * late + (1 | Subject)", data=data)
    table = bm.predictions(m, x="Days", by="late", n=3)
    assert list(table["late"].astype(str)) == ["early"] * 3 + ["late"] * 3
    late_slope = m.fixef["Days"] + m.fixef["Days:latelate"]
    assert table["estimate"].iloc[5] - table["estimate"].iloc[3] == pytest.approx(9 * late_slope, rel=1e-10)
    fit, post = slope
    drawn = bm.predictions(fit, post, x="Days", values=[0.0, 9.0], level=0.9)
    beta = post["posterior"]["beta"].values.reshape(-1, 2)
    at9 = beta[:, 0] + 9 * beta[:, 1]
    assert drawn["estimate"].iloc[1] == pytest.approx(at9.mean(), rel=1e-12)
    assert drawn["lower"].iloc[1] == pytest.approx(np.quantile(at9, 0.05), rel=1e-12)
    with pytest.raises(ArgumentError, match="not a column"):
        bm.predictions(fit, x="Hours")


def test_plot_predictions_draws_bands_and_labels(slope):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    m, post = slope
    ax = bm.plots.predictions(m, post, x="Days", n=10)
    assert ax.get_xlabel() == "Days" and ax.get_ylabel() == "expected Reaction"
    assert len(ax.lines) == 1 and len(ax.collections) == 1


# --- tidy ran_vals against lme4 (tests/reference/issues/ranef_condvar.json, make_ranef_condvar.R) ------


def _ranef_reference():
    import json
    from pathlib import Path

    return json.loads((Path(__file__).parent / "reference" / "issues" / "ranef_condvar.json").read_text())


@pytest.mark.parametrize(("case_id", "formula", "dataset", "family", "tol_est", "tol_sd"), [
    ("sleepstudy_slope", "Reaction ~ Days + (Days | Subject)", "sleepstudy", None, 1e-4, 1e-5),
    ("penicillin_crossed", "diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin", None, 1e-4, 1e-5),
    # GLMM estimates agree with lme4's to ~1e-3 SE (the project's GLMM tolerance is 2e-2 SE)
    ("cbpp_binomial", "cbind(incidence, size - incidence) ~ period + (1 | herd)", "cbpp", "binomial", 2e-3, 1e-3),
])
def test_tidy_ran_vals_are_lme4s_condval_and_condsd(case_id, formula, dataset, family, tol_est, tol_sd):
    """lme4's as.data.frame(ranef(m, condVar = TRUE)) = broom.mixed's tidy(m, effects = "ran_vals")."""
    ref = _ranef_reference()[case_id]
    data = bm.load_dataset(dataset)
    m = bm.lmer(formula, data) if family is None else bm.glmer(formula, data, family=family)
    t = m.tidy()
    assert list(t["group"]) == ref["group"] and list(t["term"]) == ref["term"] and list(t["level"]) == ref["level"]
    sd = np.asarray(ref["std_error"])
    assert np.max(np.abs(t["estimate"].to_numpy() - ref["estimate"]) / sd) < tol_est
    np.testing.assert_allclose(t["std.error"], sd, rtol=tol_sd)
