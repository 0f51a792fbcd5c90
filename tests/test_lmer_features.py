"""lmer features the shared corpus does not exercise, against lme4 on simulated data.

Prior weights, offset(), factor slopes (0 + f | g), an ordered factor (contr.poly), a
numeric-by-factor interaction, (1 | g:h), transforms (log(x), I(x^2)) and missing
values: what each feature must do.  Data and lme4's numbers: tests/reference/extra/
(make_extra.R, README.md); test_lmer_reference.py compares these cases with lme4's
numbers as it does the corpus (same LMM tolerances).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm
from conftest import cached_fit, extra_case_ids, extra_dataset

CASES = extra_case_ids("lmm")


def test_every_feature_has_a_case():
    assert CASES == [
        "lmm_factor_slopes", "lmm_interaction_group", "lmm_missing_ml", "lmm_numeric_by_factor", "lmm_offset",
        "lmm_ordered_factor", "lmm_transforms", "lmm_weights", "lmm_weights_ml",
    ]


@pytest.mark.parametrize("case_id", CASES)
def test_no_warnings_but_the_missing_values_one(case_id):
    fitted = cached_fit(case_id)
    texts = fitted.warning_texts()
    if fitted.case["n_dropped"]:
        assert texts == [f"{fitted.case['n_dropped']} rows with missing values removed (missing in y: 5, x: 3, g: 2)"]
    else:
        assert texts == []


# --- what each feature must do ------------------------------------------------------------


def test_csv_factors_come_back_with_rs_level_order():
    data = extra_dataset("lmm_features")
    assert list(data["f"].cat.categories) == ["lo", "mid", "hi"]  # not alphabetical: R's order
    assert not data["f"].cat.ordered
    assert list(data["o"].cat.categories) == ["none", "low", "medium", "high"]
    assert data["o"].cat.ordered
    assert data["g"].cat.categories[0] == "G01" and len(data["g"].cat.categories) == 15


def test_prior_weights_enter_the_fit():
    weighted = cached_fit("lmm_weights").model
    assert weighted.weights_name == "w"
    np.testing.assert_array_equal(weighted.compiled.weights, extra_dataset("lmm_features")["w"].to_numpy())
    unweighted = bm.lmer("y ~ x + (1 | g)", extra_dataset("lmm_features"))
    # lme4's numbers differ between the two, and so must ours (by far more than the tolerance)
    assert abs(unweighted.fixef["x"] - weighted.fixef["x"]) > 0.01 * weighted.se["x"]
    # Pearson residuals carry sqrt(weights), as lme4's residuals(type = "pearson")
    np.testing.assert_allclose(weighted.residuals("pearson"),
                               (weighted.compiled.y - weighted.fitted()) * np.sqrt(weighted.compiled.weights))


def test_offset_is_part_of_fitted_values_and_predictions():
    m = cached_fit("lmm_offset").model
    off = extra_dataset("lmm_features")["off"].to_numpy()
    np.testing.assert_allclose(m.compiled.offset, off)
    data = extra_dataset("lmm_features")
    random_part = m.ranef["g"]["(Intercept)"].to_numpy()[data["g"].cat.codes.to_numpy()]
    np.testing.assert_allclose(m.fitted(), m.compiled.X @ m.fixef.to_numpy() + random_part + off, rtol=1e-12)
    np.testing.assert_allclose(m.predict(re_form=np.nan), m.compiled.X @ m.fixef.to_numpy() + off, rtol=1e-12)
    newdata = extra_dataset("lmm_features").iloc[:5]
    np.testing.assert_allclose(m.predict(newdata=newdata), m.fitted()[:5], rtol=1e-10)
    shifted = newdata.assign(off=newdata["off"] + 1.0)
    np.testing.assert_allclose(m.predict(newdata=shifted), m.fitted()[:5] + 1.0, rtol=1e-10)


def test_factor_slopes_give_one_column_per_level():
    m = cached_fit("lmm_factor_slopes").model
    (term,) = m.compiled.terms
    assert term.column_names == ("flo", "fmid", "fhi")
    assert m.ranef["g"].columns.tolist() == ["flo", "fmid", "fhi"]
    # every row has exactly one indicator on, the column of its level
    f = extra_dataset("lmm_features")["f"]
    np.testing.assert_array_equal(term.columns, np.eye(3)[f.cat.codes.to_numpy()])


def test_ordered_factor_uses_rs_polynomial_contrasts():
    m = cached_fit("lmm_ordered_factor").model
    # R 4.2.2: print(contr.poly(4), digits = 15)
    contr_poly_4 = np.array([
        [-0.670820393249937, 0.5, -0.223606797749979],
        [-0.223606797749979, -0.5, 0.670820393249937],
        [0.223606797749979, -0.5, -0.670820393249937],
        [0.670820393249937, 0.5, 0.223606797749979],
    ])
    codes = extra_dataset("lmm_features")["o"].cat.codes.to_numpy()
    assert m.compiled.fixef_names == ["(Intercept)", "o.L", "o.Q", "o.C"]
    np.testing.assert_allclose(m.compiled.X[:, 1:], contr_poly_4[codes], atol=1e-14)


def test_numeric_by_factor_interaction_columns():
    m = cached_fit("lmm_numeric_by_factor").model
    data = extra_dataset("lmm_features")
    X = pd.DataFrame(m.compiled.X, columns=m.compiled.fixef_names)
    np.testing.assert_allclose(X["x:fhi"], data["x"] * (data["f"] == "hi"))
    np.testing.assert_allclose(X["x:fmid"], data["x"] * (data["f"] == "mid"))


def test_interaction_grouping_factor():
    m = cached_fit("lmm_interaction_group").model
    assert m.ngrps == {"g:h": 60, "g": 15}
    labels = m.ranef["g:h"].index
    assert labels[0] == "G01:h1" and labels[1] == "G01:h2" and labels[4] == "G02:h1"  # the first factor slowest, as R


def test_transforms_in_the_fixed_part():
    m = cached_fit("lmm_transforms").model
    x = extra_dataset("lmm_features")["x"].to_numpy()
    assert m.compiled.fixef_names == ["(Intercept)", "log(x)", "I(x^2)"]
    np.testing.assert_allclose(m.compiled.X[:, 1], np.log(x))
    np.testing.assert_allclose(m.compiled.X[:, 2], x**2)


def test_missing_values_drop_only_rows_the_model_uses():
    fit = cached_fit("lmm_missing_ml")
    m, data = fit.model, extra_dataset("lmm_missing")
    assert data["unused"].isna().sum() == 3  # NAs in a column outside the model ...
    used = data[["y", "x", "f", "g"]].notna().all(axis=1)
    assert m.n_dropped == (~used).sum() == 9  # ... drop nothing: lme4's 351 of 360 rows
    assert m.nobs == 351
    np.testing.assert_allclose(m.compiled.y, data.loc[used, "y"].to_numpy())


def test_cross_products_accumulate_over_chunks():
    """[Z X y]'W[Z X y] summed over chunks of rows equals the whole-data one, so data that
    arrive in pieces give the same deviance (issue: cross-products computed once, accumulable)."""
    import numpy as np

    from bayesmix.engine.lmm import CrossProducts, ProfiledDeviance
    from bayesmix.spec.model import compile_model

    for formula, name in [("Reaction ~ Days + (Days | Subject)", "sleepstudy"),
                          ("diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin")]:
        c = compile_model(formula, bm.load_dataset(name))
        whole = CrossProducts.from_data(c.terms, c.X, c.y, c.weights)
        pieces = [np.arange(c.n)[i::3] for i in range(3)]  # interleaved chunks: every level in each
        total = None
        for rows in pieces:
            part = CrossProducts.from_data([t.subset(rows) for t in c.terms], c.X[rows], c.y[rows], c.weights[rows])
            total = part if total is None else total + part
        theta = c.theta_start() * 0.7
        d_whole = ProfiledDeviance(c.terms, c.X, c.y, c.weights, reml=True, cross=whole)
        d_sum = ProfiledDeviance(c.terms, c.X, c.y, c.weights, reml=True, cross=total)
        assert d_sum(theta) == pytest.approx(d_whole(theta), rel=1e-12)
