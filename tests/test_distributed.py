"""lmer on a Dask DataFrame (issue 15): the same model as the in-memory fit of the same rows.

On a LocalCluster in this process (one worker, two threads).  What is compared:

* the profiled deviance, a function of the reduced cross-products only, equals the
  in-memory one wherever it is evaluated (1e-11 relative): the sums are the same sums;
* at one θ, everything the result is built from (β, conditional modes, σ, vcov) agrees to
  1e-9 relative, and the criterion at the optimum to 1e-10;
* the optimizer's answers (θ, β, SEs, σ, b, variance components) agree to 1e-8 relative (the
  issue's bar): the optimizer stops on the exact gradient of the profiled deviance (engine.lmm),
  whose rounding noise is far below the deviance's.  (With a value-only optimizer the bar
  was out of reach: deviances that differ by ~1e-12 in their last bits, as sums in another
  order do, put each optimum anywhere within sqrt(2·1e-12/λ_min(H)) ≈ 4e-7 in θ on
  sleepstudy; the in-memory fit of reordered rows moved as much, see
  ``test_in_memory_fit_moves_as_much_with_row_order``.)
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from dask_support import cluster, dask, dd, fit_both, partitioned  # noqa: F401  (cluster: the module's autouse fixture)

import bayesmix as bm
from bayesmix.errors import ArgumentError, RowsRequiredError


def assert_same_fit(d, m, opt_rtol=1e-8):
    assert type(d).__name__ == "DaskLmerResult"
    assert list(d.fixef.index) == list(m.fixef.index)
    assert d.compiled.dropped_fixef == m.compiled.dropped_fixef
    assert (d.nobs, d.n_dropped, d.ngrps, d.method) == (m.nobs, m.n_dropped, m.ngrps, m.method)
    for group in m.ranef:
        pd.testing.assert_index_equal(d.ranef[group].index, m.ranef[group].index)
        assert list(d.ranef[group].columns) == list(m.ranef[group].columns)
    # the same sufficient statistics: the same deviance function
    theta = m.theta_values
    for t in (theta, 0.6 * theta + 0.2):
        assert d.profiled_deviance(t) == pytest.approx(m.profiled_deviance(t), rel=1e-11)
    # at the same θ, the same estimates
    got, want = _estimates_at(d, theta), _estimates_at(m, theta)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * np.max(np.abs(b)))
    # the optimum: criterion to 1e-10, parameters to the optimizer's reproducibility
    assert d.criterion_value == pytest.approx(m.criterion_value, rel=1e-10)
    np.testing.assert_allclose(d.theta_values, m.theta_values, rtol=opt_rtol, atol=opt_rtol)
    np.testing.assert_allclose(d.beta_values, m.beta_values, rtol=opt_rtol)
    np.testing.assert_allclose(d.se.to_numpy(), m.se.to_numpy(), rtol=opt_rtol)
    np.testing.assert_allclose(d.sigma, m.sigma, rtol=opt_rtol)
    np.testing.assert_allclose(d.b, m.b, rtol=opt_rtol, atol=opt_rtol * np.max(np.abs(m.b)))
    np.testing.assert_allclose(d.varcorr["vcov"], m.varcorr["vcov"], rtol=10 * opt_rtol,
                               atol=opt_rtol * np.max(np.abs(m.varcorr["vcov"])))


def _estimates_at(fit, theta):
    dev = fit.profiled_deviance
    f = dev.factorize(theta)
    beta, u = dev.solve(f)
    return beta, dev.b_from_u(theta, u), f.pwrss, dev.fixef_covariance_unscaled(f)


def _both(formula, df, bounds, **kwargs):
    return fit_both(bm.lmer, formula, df, bounds, **kwargs)


SLEEP = "Reaction ~ Days + (Days | Subject)"


@pytest.mark.parametrize("bounds", [[], [60, 61, 170], [0, 0, 45, 45, 90, 179, 180]],
                         ids=["one", "uneven", "empty partitions"])
@pytest.mark.parametrize("REML", [True, False])
def test_sleepstudy_random_slopes(bounds, REML):
    d, m = _both(SLEEP, bm.load_dataset("sleepstudy"), bounds, REML=REML)
    assert_same_fit(d, m)
    assert d.deviance == pytest.approx(m.deviance, rel=1e-10)


@pytest.mark.parametrize("subject", ["category", "int", "str"])
def test_levels_in_one_partition_only(subject):
    """Rows sorted by subject: most subjects occur in one partition only; levels as pandas orders them
    (a categorical's order, numbers numerically, strings as text)."""
    df = bm.load_dataset("sleepstudy").sort_values(["Subject", "Days"], ascending=[False, True]).reset_index(drop=True)
    df["Subject"] = df["Subject"].astype(str).astype(subject) if subject != "category" else df["Subject"]
    if subject == "str":
        df["Subject"] = "s" + df["Subject"].str[-2:].str.lstrip("0")  # "s8" sorts after "s72" as text, not as a number
    d, m = _both(SLEEP, df, [10, 25, 100, 100])
    assert_same_fit(d, m)
    assert list(d.ranef["Subject"].index) == list(m.ranef["Subject"].index)


def test_crossed_and_nested_terms():
    pen = bm.load_dataset("Penicillin")
    assert_same_fit(*_both("diameter ~ 1 + (1 | plate) + (1 | sample)", pen, [30, 31, 100]))
    pastes = bm.load_dataset("Pastes")
    assert_same_fit(*_both("strength ~ 1 + (1 | batch/cask)", pastes, [7, 7, 33]))


def test_string_and_numeric_factors_weights_offset_scale_missing_rank():
    """Grouping by a string and by a number (R sorts both), a fixed factor whose first level is
    absent from a partition, weights, an offset, scale(), uncorrelated slopes, missing rows and a
    collinear column: the same frame as pandas builds."""
    rng = np.random.default_rng(15)
    n = 400
    df = pd.DataFrame({
        "g": rng.choice([f"s{i}" for i in range(25)], n),
        "h": rng.integers(1, 12, n).astype(float),
        "trt": pd.Categorical(rng.choice(["ctl", "lo", "hi"], n), categories=["ctl", "lo", "hi"]),
        "x": rng.normal(size=n),
        "w": rng.uniform(0.5, 2.0, n),
        "off": rng.normal(scale=0.1, size=n),
    })
    df["x2"] = 2 * df["x"]
    df["y"] = (1 + 0.5 * df["x"] + (df["trt"] == "hi") + rng.normal(size=25)[df["g"].str[1:].astype(int)]
               + rng.normal(size=n))
    df.loc[[3, 50, 51], "x"] = np.nan
    df.loc[7, "y"] = np.nan
    df = df.sort_values("trt", ascending=False, kind="stable").reset_index(drop=True)  # 'ctl' only at the end
    formula = "y ~ scale(x) + x2 + trt + (scale(x) || g) + (1 | h)"
    d, m = _both(formula, df, [100, 100, 250], weights="w", offset="off")
    assert m.compiled.dropped_fixef == ["x2"] and m.n_dropped == 4
    assert_same_fit(d, m)
    pd.testing.assert_series_equal(d.r2(), m.r2(), rtol=1e-8)  # row moments merged over partitions, x2 dropped


def test_categories_unknown_to_dask():
    """Partitions with their own categories (parquet files written apart): the levels of ``ddf.compute()``."""
    df = bm.load_dataset("sleepstudy").sort_values(["Days", "Subject"]).reset_index(drop=True)
    df["Subject"] = df["Subject"].astype(str)
    pieces = [df.iloc[a:b].assign(Subject=lambda f: f["Subject"].astype("category")) for a, b in ((0, 70), (70, 180))]
    ddf = dd.from_delayed([dask.delayed(p) for p in pieces], meta=pieces[0].iloc[:0], verify_meta=False)
    ddf = ddf.assign(Subject=ddf["Subject"].cat.as_unknown())
    assert not ddf["Subject"].cat.known
    assert_same_fit(bm.lmer(SLEEP, ddf), bm.lmer(SLEEP, ddf.compute()))


def test_in_memory_fit_moves_as_much_with_row_order():
    """The in-memory fit of the same rows in another order (sums in another order, as a Dask fit's)
    agrees with itself to the bar the Dask fit is held to."""
    df = bm.load_dataset("sleepstudy")
    m = bm.lmer(SLEEP, df)
    shuffled = bm.lmer(SLEEP, df.sample(frac=1.0, random_state=3).reset_index(drop=True))
    assert shuffled.profiled_deviance(m.theta_values) == pytest.approx(m.profiled_deviance(m.theta_values), rel=1e-12)
    np.testing.assert_allclose(shuffled.theta_values, m.theta_values, rtol=1e-8)


def test_sufficient_statistics_methods_work():
    df = bm.load_dataset("sleepstudy")
    d, m = _both(SLEEP, df, [50, 120])
    assert d.summary() == m.summary()  # the scaled residuals' quantiles exactly too, from the cluster
    assert d.summary(ddf="Satterthwaite") == m.summary(ddf="Satterthwaite")  # from the deviance function
    np.testing.assert_allclose(d.scaled_residual_quantiles(), m.scaled_residual_quantiles(), rtol=1e-8)
    np.testing.assert_allclose(d.vcov.to_numpy(), m.vcov.to_numpy(), rtol=1e-8)
    for label, cv in m.ranef_condvar().items():
        np.testing.assert_allclose(d.ranef_condvar()[label], cv, rtol=1e-8)
    pd.testing.assert_frame_equal(d.icc(), m.icc(), rtol=1e-8)  # from the row moments of pass 2
    pd.testing.assert_series_equal(d.r2(), m.r2(), rtol=1e-8)
    ci_d, ci_m = d.confint(method="profile"), m.confint(method="profile")
    # profile intervals: ζ evaluated along an adaptive path and interpolated (inference.profiles); the
    # same rows in another order move them by ~3e-6 relative in memory (θ by 1e-14), so the Dask fit,
    # whose sums come in another order, is held to that bar: twice the in-memory row-order spread
    shuffled = bm.lmer(SLEEP, df.sample(frac=1.0, random_state=3).reset_index(drop=True)).confint(method="profile")
    spread = np.max(np.abs(shuffled.to_numpy() - ci_m.to_numpy()) / np.abs(ci_m.to_numpy()))
    np.testing.assert_allclose(ci_d.to_numpy(), ci_m.to_numpy(), rtol=max(1e-6, 2 * spread))
    pd.testing.assert_index_equal(ci_d.index, ci_m.index)


def test_exact_quantiles_of_a_dask_series():
    """np.quantile's numbers, from brackets around Dask's approximate quantiles (ties, uneven partitions)."""
    from bayesmix.distributed.quantiles import exact_quantiles

    rng = np.random.default_rng(4)
    values = np.concatenate([rng.standard_t(2, 3001), np.full(500, 0.25), rng.normal(size=7)])
    series = dd.from_pandas(pd.Series(values), npartitions=1).repartition(divisions=[0, 3, 3000, 3100, 3507])
    probs = [0, 0.001, 0.25, 0.5, 0.6, 0.75, 0.999, 1]
    np.testing.assert_array_equal(exact_quantiles(series, probs), np.quantile(values, probs))


def test_anova_between_dask_fits():
    """Likelihood-ratio tests from the sums: the ML refits and the table of the in-memory fits."""
    df = bm.load_dataset("sleepstudy")
    ddf = partitioned(df, [50, 120])
    small, large = "Reaction ~ Days + (1 | Subject)", SLEEP
    d0, d1 = bm.lmer(small, ddf), bm.lmer(large, ddf)
    m0, m1 = bm.lmer(small, df), bm.lmer(large, df)
    got, want = bm.anova(d0, d1), bm.anova(m0, m1)
    np.testing.assert_allclose(got.to_numpy(dtype=float), want.to_numpy(dtype=float), rtol=1e-8)
    with pytest.raises(bm.errors.InferenceError, match="not nested"):
        bm.anova(bm.lmer("Reaction ~ 1 + (Days | Subject)", ddf), bm.lmer(small, ddf))
    with pytest.raises(bm.errors.InferenceError, match="same response"):
        bm.anova(d0, bm.lmer("Reaction ~ Days + (1 | Subject)", partitioned(df.assign(Reaction=df.Reaction * 2), [90])))


def test_rowwise_values_are_lazy_dask_series():
    df = bm.load_dataset("sleepstudy")
    df.loc[[5, 17], "Reaction"] = np.nan
    d, m = _both(SLEEP, df, [40, 40, 140])
    for lazy, eager in [(d.fitted(), m.fitted()), (d.residuals(), m.residuals()),
                        (d.residuals(type="pearson", scaled=True), m.residuals(type="pearson", scaled=True)),
                        (d.predict(re_form="~0"), m.predict(re_form="~0"))]:
        assert isinstance(lazy, dd.Series)
        values = lazy.compute()
        assert len(values) == m.nobs and 5 not in values.index
        np.testing.assert_allclose(values.to_numpy(), eager, rtol=1e-8, atol=1e-8 * np.max(np.abs(eager)))


def test_predict_new_rows_with_the_whole_data_frame_state():
    """predict(newdata=pandas) codes new rows with the levels and scale() learned over all partitions."""
    df = bm.load_dataset("sleepstudy")
    formula = "Reaction ~ scale(Days) + (scale(Days) | Subject)"
    d, m = _both(formula, df, [30, 30, 100])
    new = pd.DataFrame({"Days": [0.0, 4.5, 9.0], "Subject": pd.Categorical(["308", "999", "372"])})
    np.testing.assert_allclose(d.predict(new), m.predict(new), rtol=1e-8)
    np.testing.assert_allclose(d.predict(new, re_form="~0"), m.predict(new, re_form="~0"), rtol=1e-8)
    lazy = d.predict(dd.from_pandas(new, npartitions=2))  # new rows on the cluster: a lazy Series
    assert isinstance(lazy, dd.Series)
    np.testing.assert_allclose(lazy.compute().to_numpy(), m.predict(new), rtol=1e-8)


@pytest.mark.parametrize("formula", [
    "log(Reaction) ~ factor(Days) + (1 | Subject)",
    "Reaction ~ I(Days^2) + (Days > 4) + (1 | Subject)",
    "Reaction ~ Days + (1 | Subject) + (1 | Subject:half)",
    "Reaction ~ Days + (1 | half/Subject)",
    "Reaction ~ Days + (1 | Subject:Days2)",
])
def test_expressions_factors_and_interactions(formula):
    """factor() of a number, logical and arithmetic terms, interactions of factors and of numbers
    (levels of an interaction come from the combinations that occur anywhere)."""
    df = bm.load_dataset("sleepstudy").sort_values(["Days", "Subject"]).reset_index(drop=True)
    df["half"] = np.where(df["Days"] < 5, "early", "late")
    df["Days2"] = df["Days"] // 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # singular fits, as in memory
        assert_same_fit(*_both(formula, df, [36, 36, 90, 175]))


def test_dot_formula():
    df = bm.load_dataset("sleepstudy")
    assert_same_fit(*_both("Reaction ~ . - Subject + (1 | Subject)", df, [77]))


def test_poly_is_refused():
    with pytest.raises(ArgumentError, match=r"poly\(Days, 2\) is not available on a Dask DataFrame"):
        bm.lmer("Reaction ~ poly(Days, 2) + (1 | Subject)", partitioned(bm.load_dataset("sleepstudy"), [90]))


def test_methods_that_need_rows_say_so():
    d = bm.lmer(SLEEP, partitioned(bm.load_dataset("sleepstudy"), [90]))
    with pytest.raises(RowsRequiredError, match="Dask DataFrame.*ddf.compute"):
        d.simulate(1)
    with pytest.raises(RowsRequiredError, match="simulate, refit, bootstrap"):
        _ = d.compiled.X
    assert "180 rows left on the cluster" in repr(d.compiled)
    import pickle

    again = pickle.loads(pickle.dumps(d))  # a fit travels: its lazy collection, no rows
    np.testing.assert_array_equal(again.fitted().compute(), d.fitted().compute())
    with pytest.raises(ArgumentError, match="weights= must name a column"):
        bm.lmer(SLEEP, partitioned(bm.load_dataset("sleepstudy"), [90]), weights=np.ones(180))
    with pytest.raises(ArgumentError, match="glmer_nb on a Dask DataFrame"):  # glmer works (test_distributed_glmer)
        bm.glmer_nb("incidence ~ period + (1 | herd)", partitioned(bm.load_dataset("cbpp"), [20]))


def test_errors_from_the_partitions_are_bayesmix_errors():
    df = bm.load_dataset("sleepstudy")
    with pytest.raises(bm.errors.DataError, match="not found in data"):
        bm.lmer("Reaction ~ Nope + (1 | Subject)", partitioned(df, [90]))
    one = df[df["Subject"] == df["Subject"].iloc[0]].reset_index(drop=True)
    with pytest.raises(bm.errors.DataError, match="single level"):
        bm.lmer("Reaction ~ Days + (1 | Subject)", partitioned(one, [5]))
