"""Formula parsing (lme4's expansions), R's model matrices, predictions, and the data sets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm
from bayesmix.spec.design import Evaluator, model_matrix
from bayesmix.spec.formula import RandomTermSpec, parse_formula
from conftest import cached_fit

# --- parse_formula ------------------------------------------------------------------------


def test_simple_formula_is_split_and_redisplayed():
    p = parse_formula("Reaction~Days+(Days|Subject)")
    assert p.response == "Reaction"
    assert p.fixed == "Days"
    assert p.random == (RandomTermSpec("Days", "Subject"),)
    assert p.offsets == ()
    assert p.display == "Reaction ~ Days + (Days | Subject)"


def test_double_bar_expands_to_independent_terms():
    p = parse_formula("Reaction ~ Days + (Days || Subject)")
    assert p.random == (RandomTermSpec("1", "Subject"), RandomTermSpec("0 + Days", "Subject"))
    # R 4.2.2 / lme4 1.1-31: formula(lmer(Reaction ~ Days + (Days || Subject), sleepstudy))
    assert p.display == "Reaction ~ Days + ((1 | Subject) + (0 + Days | Subject))"


def test_double_bar_without_intercept_has_no_intercept_term():
    p = parse_formula("y ~ x + (0 + x + z || g)")
    assert p.random == (RandomTermSpec("0 + x", "g"), RandomTermSpec("0 + z", "g"))


def test_slash_expands_to_nested_terms_named_as_lme4():
    p = parse_formula("strength ~ 1 + (1 | batch/cask)")
    assert p.random == (RandomTermSpec("1", "batch"), RandomTermSpec("1", "cask:batch"))
    assert p.fixed == "1"
    three = parse_formula("y ~ (1 | a/b/c)")
    assert [t.group for t in three.random] == ["a", "b:a", "c:b:a"]


def test_interaction_grouping_factor_is_kept():
    p = parse_formula("angle ~ recipe * temp + (1 | recipe:replicate)")
    assert p.random == (RandomTermSpec("1", "recipe:replicate"),)
    assert p.fixed == "recipe * temp"


def test_offsets_are_pulled_out_of_the_fixed_part():
    p = parse_formula("y ~ x + offset(log(expo)) + (1 | g)")
    assert p.offsets == ("log(expo)",)
    assert p.fixed == "x"
    assert p.display == "y ~ x + offset(log(expo)) + (1 | g)"


def test_no_fixed_terms_means_intercept_only_and_zero_is_kept():
    assert parse_formula("y ~ (1 | g)").fixed == "1"
    assert parse_formula("y ~ 0 + x + (1 | g)").fixed == "0 + x"


def test_crossed_terms_keep_formula_order():
    p = parse_formula("diameter ~ 1 + (1 | plate) + (1 | sample)")
    assert [t.group for t in p.random] == ["plate", "sample"]


def test_cbind_response():
    from bayesmix.spec.formula import cbind_arguments

    p = parse_formula("cbind(incidence, size - incidence) ~ period + (1 | herd)")
    assert cbind_arguments(p.response) == ("incidence", "size - incidence")
    assert cbind_arguments("Reaction") is None


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("y ~ x + (1 | g", "unbalanced parentheses"),
        ("y ~ x + ( | g)", "nothing left of the bar"),
        ("y ~ x + (1 | )", "no grouping factor right of the bar"),
        ("y ~ x - (1 | g)", "cannot subtract a random-effects term"),
        ("~ x + (1 | g)", "no response"),
        ("y ~ ", "nothing on the right"),
        ("y ~ (1 | a//b)", "malformed nested grouping"),
    ],
)
def test_formula_errors_name_the_problem(formula, message):
    with pytest.raises(bm.FormulaError, match=message):
        parse_formula(formula)


# --- model matrices: column names and order as R's model.matrix ---------------------------
# Every expected list below is R 4.2.2's colnames(model.matrix(<formula>, <data>)) on the
# lme4 1.1-31 data set, printed by Rscript and pasted here.

R_COLUMN_NAMES = [
    ("cake", "recipe * temperature", [
        "(Intercept)", "recipeB", "recipeC", "temperature.L", "temperature.Q", "temperature.C", "temperature^4",
        "temperature^5", "recipeB:temperature.L", "recipeC:temperature.L", "recipeB:temperature.Q",
        "recipeC:temperature.Q", "recipeB:temperature.C", "recipeC:temperature.C", "recipeB:temperature^4",
        "recipeC:temperature^4", "recipeB:temperature^5", "recipeC:temperature^5",
    ]),
    ("cbpp", "0 + period", ["period1", "period2", "period3", "period4"]),
    ("sleepstudy", "Days + I(Days^2) + log(Reaction)", ["(Intercept)", "Days", "I(Days^2)", "log(Reaction)"]),
    ("sleepstudy", "Days:Subject", ["(Intercept)"] + [f"Days:Subject{s}" for s in (
        308, 309, 310, 330, 331, 332, 333, 334, 335, 337, 349, 350, 351, 352, 369, 370, 371, 372)]),
    ("cake", "recipe + recipe:temp", ["(Intercept)", "recipeB", "recipeC", "recipeA:temp", "recipeB:temp",
                                      "recipeC:temp"]),
    ("VerbAgg", "Anger + Gender + btype + situ", ["(Intercept)", "Anger", "GenderM", "btypescold", "btypeshout",
                                                  "situself"]),
    ("VerbAgg", "btype * situ", ["(Intercept)", "btypescold", "btypeshout", "situself", "btypescold:situself",
                                 "btypeshout:situself"]),
    ("VerbAgg", "0 + Gender + situ", ["GenderF", "GenderM", "situself"]),
]


@pytest.mark.parametrize(("dataset", "rhs", "expected"), R_COLUMN_NAMES, ids=[r for _, r, _ in R_COLUMN_NAMES])
def test_model_matrix_columns_as_r(dataset, rhs, expected):
    mm = model_matrix(rhs, Evaluator(bm.load_dataset(dataset)))
    assert mm.names == expected
    assert mm.matrix.shape[1] == len(expected)


def test_model_matrix_values_as_r_for_ordered_factor_interaction():
    cake = bm.load_dataset("cake")
    mm = model_matrix("recipe * temperature", Evaluator(cake))
    X = pd.DataFrame(mm.matrix, columns=mm.names)
    # R: model.matrix(~ recipe * temperature, cake)[c(1, 7, 20), ], printed with 15 digits
    row1 = {"(Intercept)": 1, "recipeB": 0, "recipeC": 0, "temperature.L": -0.597614304667197,
            "temperature.Q": 0.545544725589981, "temperature.C": -0.372677996249965,
            "temperature^4": 0.188982236504614, "temperature^5": -0.0629940788348711}
    for name, value in row1.items():
        assert X.loc[0, name] == pytest.approx(value, abs=1e-14)
    assert X.loc[6, "recipeB:temperature.L"] == pytest.approx(-0.597614304667197, abs=1e-14)
    assert X.loc[6, "recipeB:temperature^5"] == pytest.approx(-0.0629940788348711, abs=1e-14)
    assert X.loc[19, "temperature.C"] == pytest.approx(0.521749194749951, abs=1e-14)
    assert X.loc[19, "temperature^4"] == pytest.approx(-0.566946709513841, abs=1e-14)
    assert (X.loc[19, [c for c in X.columns if ":" in c]] == 0).all()


def test_model_matrix_numeric_by_factor_without_main_effect_uses_indicators():
    sleep = bm.load_dataset("sleepstudy")
    mm = model_matrix("Days:Subject", Evaluator(sleep))
    X = pd.DataFrame(mm.matrix, columns=mm.names)
    first = sleep["Subject"] == "308"
    np.testing.assert_array_equal(X.loc[first, "Days:Subject308"], sleep.loc[first, "Days"])
    assert (X.loc[~first, "Days:Subject308"] == 0).all()


# --- predict -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sleep_slope():
    return cached_fit("sleepstudy_slope_reml").model


def test_predict_newdata_seen_and_unseen_levels(sleep_slope):
    m = sleep_slope
    beta = m.fixef
    newdata = pd.DataFrame({"Days": [0.0, 5.0, 5.0], "Subject": ["308", "308", "999"]})
    pred = m.predict(newdata=newdata)
    b308 = m.ranef["Subject"].loc["308"]
    assert pred[0] == pytest.approx(beta["(Intercept)"] + b308["(Intercept)"], rel=1e-12)
    assert pred[1] == pytest.approx(beta["(Intercept)"] + b308["(Intercept)"] + 5 * (beta["Days"] + b308["Days"]),
                                    rel=1e-12)
    # a level not seen in fitting gets the population prediction, as lme4's allow.new.levels = TRUE
    assert pred[2] == pytest.approx(beta["(Intercept)"] + 5 * beta["Days"], rel=1e-12)


def test_predict_newdata_equals_fitted_on_the_training_rows(sleep_slope):
    m = sleep_slope
    data = bm.load_dataset("sleepstudy")
    np.testing.assert_allclose(m.predict(newdata=data.iloc[[0, 17, 100]]), m.fitted()[[0, 17, 100]], rtol=1e-12)
    # plain strings for the grouping column work as well as the categorical
    as_text = data.iloc[[0, 17, 100]].assign(Subject=lambda d: d["Subject"].astype(str))
    np.testing.assert_allclose(m.predict(newdata=as_text), m.fitted()[[0, 17, 100]], rtol=1e-12)


@pytest.mark.parametrize("re_form", [np.nan, "~0", "NA", "~ 0"])
def test_re_form_na_means_population_level(sleep_slope, re_form):
    m = sleep_slope
    population = m.compiled.X @ m.fixef.to_numpy()
    np.testing.assert_allclose(m.predict(re_form=re_form), population, rtol=1e-12)
    newdata = pd.DataFrame({"Days": [0.0, 9.0], "Subject": ["308", "372"]})
    expected = m.fixef["(Intercept)"] + newdata["Days"].to_numpy() * m.fixef["Days"]
    np.testing.assert_allclose(m.predict(newdata=newdata, re_form=re_form), expected, rtol=1e-12)


def test_re_form_with_some_terms_uses_just_those():
    m = cached_fit("sleepstudy_uncorr_reml").model  # (1 | Subject) + (0 + Days | Subject)
    days = m.compiled.data["Days"].to_numpy()
    codes = m.compiled.data["Subject"].cat.codes.to_numpy()
    intercepts = m.ranef["Subject"]["(Intercept)"].to_numpy()[codes]
    slopes = m.ranef["Subject"]["Days"].to_numpy()[codes]
    population = m.compiled.X @ m.fixef.to_numpy()
    np.testing.assert_allclose(m.predict(re_form="~(1 | Subject)"), population + intercepts, rtol=1e-12)
    np.testing.assert_allclose(m.predict(re_form="~(0 + Days | Subject)"), population + days * slopes, rtol=1e-12)
    np.testing.assert_allclose(m.predict(re_form=None), population + intercepts + days * slopes, rtol=1e-12)


# --- data sets ----------------------------------------------------------------------------


def test_list_datasets_names_the_lme4_data_and_pbdat():
    names = bm.list_datasets()
    for name in ("sleepstudy", "cbpp", "Dyestuff", "Dyestuff2", "Penicillin", "Pastes", "cake", "grouseticks",
                 "VerbAgg", "InstEval", "sleepstudy_aboveAve", "pbDat"):
        assert name in names
    with pytest.raises(ValueError, match="unknown data set 'nope'"):
        bm.load_dataset("nope")


def test_datasets_restore_rs_factor_levels():
    # levels(...) printed by R 4.2.2 / lme4 1.1-31
    cbpp = bm.load_dataset("cbpp")
    assert list(cbpp["herd"].cat.categories) == [str(i) for i in range(1, 16)]  # numeric order, not "1", "10", ...
    assert list(cbpp["period"].cat.categories) == ["1", "2", "3", "4"]
    cake = bm.load_dataset("cake")
    assert list(cake["temperature"].cat.categories) == ["175", "185", "195", "205", "215", "225"]
    assert cake["temperature"].cat.ordered
    assert list(bm.load_dataset("VerbAgg")["btype"].cat.categories) == ["curse", "scold", "shout"]
    assert list(bm.load_dataset("Penicillin")["sample"].cat.categories) == ["A", "B", "C", "D", "E", "F"]
    assert list(bm.load_dataset("Pastes")["cask"].cat.categories) == ["a", "b", "c"]
    assert bm.load_dataset("sleepstudy")["Subject"].cat.categories[0] == "308"


def test_load_dataset_returns_a_fresh_copy():
    first = bm.load_dataset("sleepstudy")
    first.loc[0, "Reaction"] = -1.0
    assert bm.load_dataset("sleepstudy").loc[0, "Reaction"] != -1.0


def test_pbdat_shape():
    pb = bm.load_dataset("pbDat")
    assert pb.shape == (100, 4)
    assert list(pb.columns) == ["bin", "x1", "x2", "g1"]
    assert set(pb["bin"].unique()) <= {0, 1}
    assert pb["g1"].cat.categories.tolist() == [str(i) for i in range(1, 13)]
    assert pb["g1"].value_counts().min() >= 1  # every group sampled
    pd.testing.assert_frame_equal(pb, bm.load_dataset("pbDat"))  # simulated reproducibly


def test_predict_newdata_with_a_missing_group_is_population_level(sleep_slope):
    m = sleep_slope
    newdata = pd.DataFrame({"Days": [2.0], "Subject": pd.Categorical([None], categories=["308"])})
    assert m.predict(newdata=newdata)[0] == pytest.approx(m.fixef["(Intercept)"] + 2 * m.fixef["Days"], rel=1e-12)


def test_predict_newdata_with_an_unseen_fixed_effect_level_is_an_error():
    m = cached_fit("cbpp_binomial").model
    newdata = pd.DataFrame({"period": ["5"], "herd": ["1"], "incidence": [0], "size": [10]})
    with pytest.raises(bm.DataError, match="newdata column 'period' has level\\(s\\) '5' not seen in fitting"):
        m.predict(newdata=newdata)
