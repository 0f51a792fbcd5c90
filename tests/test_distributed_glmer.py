"""glmer on a Dask DataFrame (issue 15, item 4): the same fit as the in-memory glmer of the same rows.

On a LocalCluster in this process (one worker, two threads).  Each PIRLS iteration is one
pass over the persisted partitions; the Laplace objective is a function of the reduced sums
(cross-products, deviance-residual and AIC sums), which equal the in-memory sums to rounding.
So the objective agrees at every point to ~1e-12 relative, and the optimizer stages (the
engine's own) walk the same path: θ, β, SEs, the criterion and the conditional modes agree
to 1e-6 relative (the issue's bar).  Partitionings include empty partitions and levels that
occur in one partition only (rows sorted by group).
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from dask_support import cluster, dd, fit_both, partitioned  # noqa: F401  (cluster: the module's autouse fixture)

import bayesmix as bm
from bayesmix.errors import ArgumentError, FamilyError, RowsRequiredError

RTOL = 1e-6


def _both(formula, df, bounds, **kwargs):
    return fit_both(bm.glmer, formula, df, bounds, **kwargs)


def close(got, want, rtol=RTOL):
    want = np.asarray(want, dtype=float)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(np.max(np.abs(want), initial=0), 1e-300))


def assert_same_fit(d, m, se_rtol=RTOL):
    assert type(d).__name__ == "DaskGlmerResult"
    assert list(d.fixef.index) == list(m.fixef.index)
    assert (d.nobs, d.n_dropped, d.ngrps, d.method, d.family_name, d.link_name) == \
        (m.nobs, m.n_dropped, m.ngrps, m.method, m.family_name, m.link_name)
    for group in m.ranef:
        pd.testing.assert_index_equal(d.ranef[group].index, m.ranef[group].index)
    # the objective at the in-memory optimum: the same sums, the same number
    obj_d, obj_m = d.glmm_fit.objective, m.glmm_fit.objective
    par = np.concatenate([m.theta_values, m.beta_values])
    if m.nAGQ > 0:
        assert obj_d.theta_beta(par) == pytest.approx(obj_m.theta_beta(par), rel=1e-11)
    assert d.criterion_value == pytest.approx(m.criterion_value, rel=1e-10)
    close(d.theta_values, m.theta_values)
    close(d.beta_values, m.beta_values)
    close(d.b, m.b)
    close(d.se.to_numpy(), m.se.to_numpy(), rtol=se_rtol)
    assert d.vcov_source == m.vcov_source
    assert d.deviance == pytest.approx(m.deviance, rel=RTOL)  # a function of b, which agrees to RTOL
    close(d.varcorr["vcov"], m.varcorr["vcov"])


def in_memory_se_moves_with_row_order(formula, df, **kwargs) -> float:
    """How far the in-memory fit's own SEs move when its rows are shuffled (largest relative change)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = bm.glmer(formula, df, **kwargs)
        s = bm.glmer(formula, df.sample(frac=1.0, random_state=2).reset_index(drop=True), **kwargs)
    np.testing.assert_allclose(s.beta_values, m.beta_values, rtol=RTOL)  # the estimates do not move
    return float(np.max(np.abs(s.se.to_numpy() / m.se.to_numpy() - 1)))


CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


@pytest.fixture(scope="module")
def cbpp_fits():
    """cbind(successes, failures), two rows missing, uneven partitions; rows sorted by herd, so most
    herds occur in one partition only.  Shared by the tests below (each Dask fit makes ~400 passes)."""
    cbpp = bm.load_dataset("cbpp")
    cbpp.loc[[3, 30], "incidence"] = np.nan
    return _both(CBPP, cbpp, [17, 40], family="binomial")


def test_cbpp_binomial_cbind(cbpp_fits):
    d, m = cbpp_fits
    assert d.n_dropped == 2
    assert_same_fit(d, m)


def test_cbpp_with_empty_partitions():
    cbpp = bm.load_dataset("cbpp")
    assert_same_fit(*_both(CBPP, cbpp, [0, 0, 13, 13, 40, 56], family="binomial"))


def test_poisson_nested_terms_offset_and_levels_in_one_partition():
    """Poisson with an offset and two random terms (BROOD within LOCATION): rows sorted by location."""
    ticks = bm.load_dataset("grouseticks").sort_values(["LOCATION", "BROOD"]).reset_index(drop=True)
    ticks["off"] = np.log1p(np.arange(len(ticks)) % 3)
    formula = "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | LOCATION)"
    d, m = _both(formula, ticks, [100, 100, 250], family="poisson", offset="off")
    # SEs come from engine.glmm's finite-difference Hessian (steps 1e-4) of an objective whose PIRLS
    # stops within ~1e-9 of the modes; the in-memory fit's own SEs move with the row order by
    # ~2e-7 (asserted; ~2e-4 before the glmer polish of engine/glmm_polish.py), so the Dask fit's
    # are held to 1e-6 like θ, β, b and the criterion
    assert in_memory_se_moves_with_row_order(formula, ticks, family="poisson", offset="off") < 1e-6
    assert_same_fit(d, m)


def test_binomial_proportions_with_weights_and_a_factor_response():
    """Proportions with weights=trials, a probit link, and a two-level string response whose
    first level (failure, as R codes it) is absent from some partitions."""
    cbpp = bm.load_dataset("cbpp")
    cbpp["prop"] = cbpp["incidence"] / cbpp["size"]
    assert_same_fit(*_both("prop ~ period + (1 | herd)", cbpp, [20], family="binomial(link = 'probit')",
                           weights="size"))
    rng = np.random.default_rng(7)
    n = 300
    df = pd.DataFrame({"g": rng.integers(0, 15, n).astype(str), "x": rng.normal(size=n)})
    df["y"] = np.where(rng.uniform(size=n) < 1 / (1 + np.exp(-0.8 * df["x"] - rng.normal(size=15)[df["g"].astype(int)])),
                       "yes", "no")
    df = df.sort_values("y", ascending=False, kind="stable").reset_index(drop=True)  # "no" only at the end
    assert_same_fit(*_both("y ~ x + (1 | g)", df, [100, 150, 150], family="binomial"))


@pytest.mark.parametrize("nAGQ", [0, 5])
def test_nagq_zero_and_adaptive_quadrature(nAGQ):
    cbpp = bm.load_dataset("cbpp")
    d, m = _both(CBPP, cbpp, [25, 25], family="binomial", nAGQ=nAGQ)
    assert_same_fit(d, m)


def test_methods_from_the_sums_and_lazy_rowwise_values(cbpp_fits):
    d, m = cbpp_fits
    assert d.summary() == m.summary()  # scaled residuals' quantiles exactly, from the cluster
    close(d.vcov.to_numpy(), m.vcov.to_numpy())
    close(d.vcov_rx().to_numpy(), m.vcov_rx().to_numpy())  # a pass at the estimates, after the fit
    for label, cv in m.ranef_condvar().items():
        close(d.ranef_condvar()[label], cv, rtol=1e-5)
    assert d.loglik == pytest.approx(m.loglik, rel=1e-10) and d.aic == pytest.approx(m.aic, rel=1e-10)
    pd.testing.assert_frame_equal(d.icc(), m.icc(), rtol=1e-5)
    # the separation check's numbers, counted in a pass (at a loose tolerance, so that rows count)
    (k_d, n_d, c_d), (k_m, n_m, c_m) = d.extreme_fits(0.05), m.extreme_fits(0.05)
    assert (k_d, n_d) == (k_m, n_m) and k_m > 0
    close(c_d, c_m, rtol=1e-5)
    for lazy, eager in [(d.fitted(), m.fitted()), (d.linear_predictor(), m.linear_predictor()),
                        (d.residuals(), m.residuals()), (d.residuals(type="pearson"), m.residuals(type="pearson")),
                        (d.residuals(type="working"), m.residuals(type="working")),
                        (d.predict(re_form="~0", type="link"), m.predict(re_form="~0", type="link"))]:
        assert isinstance(lazy, dd.Series)
        values = lazy.compute()
        assert len(values) == m.nobs and 3 not in values.index
        close(values.to_numpy(), eager, rtol=1e-5)
    new = pd.DataFrame({"period": pd.Categorical(["1", "4"]), "herd": pd.Categorical(["3", "99"])})
    close(d.predict(new), m.predict(new), rtol=1e-5)
    close(d.predict(dd.from_pandas(new, npartitions=2)).compute().to_numpy(), m.predict(new), rtol=1e-5)
    with pytest.raises(RowsRequiredError, match=r"Dask DataFrame.*bm.glmer\(formula, ddf.compute\(\)\)"):
        d.simulate(1)
    with pytest.raises(RowsRequiredError, match="sample except an lmer fit's collapsed sampler"):
        d.sample(draws=10, tune=10, chains=1)
    import pickle

    again = pickle.loads(pickle.dumps(d))  # a fit travels: its lazy collections, no rows, no persisted designs
    np.testing.assert_array_equal(again.fitted().compute(), d.fitted().compute())


def test_what_is_refused_says_so():
    sleep = partitioned(bm.load_dataset("sleepstudy"), [90])
    with pytest.raises(RowsRequiredError, match="not the Gamma family.*ddf.compute"):
        bm.glmer("Reaction ~ Days + (1 | Subject)", sleep, family="Gamma")
    with pytest.raises(ArgumentError, match="glmer_nb on a Dask DataFrame"):
        bm.glmer_nb("Reaction ~ Days + (1 | Subject)", sleep)
    with pytest.raises(ArgumentError, match="single, scalar random-effects term"):
        bm.glmer("cbind(incidence, size - incidence) ~ period + (period | herd)",
                 partitioned(bm.load_dataset("cbpp"), [20]), nAGQ=3)
    cbpp = bm.load_dataset("cbpp")
    with pytest.raises(FamilyError, match="binomial response must lie in"):
        bm.glmer("size ~ period + (1 | herd)", partitioned(cbpp, [20]), family="binomial")


@pytest.mark.slow  # two Dask fits of ~600 passes each: about 100 s on a loaded 2-core machine
def test_negative_binomial_at_a_fixed_theta_and_anova():
    """A family with its shape given, and the likelihood-ratio test between two Dask fits (from the criteria)."""
    ticks = bm.load_dataset("grouseticks").sort_values("LOCATION").reset_index(drop=True)
    family = "negative.binomial(theta = 2)"
    small, large = "TICKS ~ YEAR + (1 | LOCATION)", "TICKS ~ YEAR + cHEIGHT + (1 | LOCATION)"
    d1, m1 = _both(large, ticks, [90, 300], family=family)
    assert_same_fit(d1, m1)
    d0 = bm.glmer(small, partitioned(ticks, [90, 300]), family=family)
    m0 = bm.glmer(small, ticks, family=family)
    np.testing.assert_allclose(bm.anova(d0, d1).to_numpy(dtype=float), bm.anova(m0, m1).to_numpy(dtype=float),
                               rtol=1e-6)  # the first row's test columns are NaN in both


def test_partition_cross_products_add_up_to_the_whole_data():
    """Each partition's PIRLS system (engine.weighted_system.WeightedSystem's bincounts, a sparse Zrest'WZ1 on the
    partition's own pattern) sums to the cross-products of all rows."""
    from bayesmix.distributed.frame import ModelSpec, learn_partition
    from bayesmix.distributed.glmm import design_partition
    from bayesmix.engine.families import get_family
    from bayesmix.engine.lmm import CrossProducts

    rng = np.random.default_rng(9)
    n = 3000
    df = pd.DataFrame({"a": rng.integers(0, 700, n), "b": rng.integers(0, 400, n), "x": rng.normal(size=n),
                       "y": rng.integers(0, 2, n) * 1.0}).sort_values("a").reset_index(drop=True)
    spec = ModelSpec("y ~ x + (1 | a) + (1 | b)", None, None, tuple(df.columns))
    state = learn_partition(df, spec).state()
    family = get_family("binomial")
    whole = design_partition(df, spec, state, family)
    parts = [design_partition(df.iloc[i:j], spec, state, family) for i, j in ((0, 1000), (1000, 1000), (1000, n))]
    w, z = rng.uniform(0.1, 1.0, n), rng.normal(size=n)
    want = CrossProducts.from_data(whole.terms, whole.X, z, w)
    got = None
    for part, (i, j) in zip(parts, ((0, 1000), (1000, 1000), (1000, n))):
        if part is not None:
            c = part.cross(w[i:j], part.X, z[i:j])
            got = c if got is None else got + c
    for name in ("a11", "a_x1", "a_rr", "a_xr", "a_xx"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-12, atol=1e-12)
    dense = (lambda m: m.toarray() if hasattr(m, "toarray") else np.asarray(m))
    np.testing.assert_allclose(dense(got.a_r1), dense(want.a_r1), rtol=1e-12, atol=1e-12)


def test_partition_cross_products_with_a_vector_valued_first_term_add_up():
    """A partition whose Zrest'WZ1 is sparse under a vector-valued first term: PIRLS's WeightedSystem
    lays it out in level blocks (BlockColumns), but partitions' sums need the plain sparse matrix, so
    the partition hands on exactly the CSR matrix the data give, and two partitions add."""
    import scipy.sparse as sp

    from bayesmix.distributed.glmm import PartitionDesign
    from bayesmix.engine.lmm import CrossProducts
    from bayesmix.engine.weighted_system import WeightedSystem
    from bayesmix.spec.model import compile_model

    rng = np.random.default_rng(12)
    n = 2800
    data = pd.DataFrame({"g1": [f"a{v:03d}" for v in np.repeat(np.arange(700), 4)],
                         "g2": [f"b{v:03d}" for v in rng.integers(0, 200, n)],
                         "x": rng.normal(size=n), "y": rng.normal(size=n)})
    c = compile_model("y ~ x + (1 + x | g1) + (1 | g2)", data)  # Zrest'WZ1: 200 x 1400, sparse
    design = PartitionDesign(c.X, c.y, c.offset, c.weights, np.ones(c.n), list(c.terms), c.y, list(c.fixef_names),
                             WeightedSystem(c))
    w = rng.uniform(0.5, 2.0, c.n)
    cross = design.cross(w, c.X, c.y)
    assert sp.issparse(cross.a_r1)
    reference = CrossProducts.from_data(c.terms, c.X, c.y, w).a_r1
    np.testing.assert_allclose(cross.a_r1.toarray(), reference.toarray(), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose((cross + cross).a_r1.toarray(), 2 * reference.toarray(), rtol=1e-13, atol=1e-13)
