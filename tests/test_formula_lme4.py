"""Formulas as lme4 users write them (issue 11): R's names and stateful transforms checked
against lme4 1.1-31 (tests/reference/issues/formulas.json, made by make_issues.R), lme4's
syntax (bare bars, '.', '||', x * (1|g), comments), names pandas allows, errors that name the
real problem, predictions on new rows with the training model frame, and hostile strings in
every position a string reaches the evaluator.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import LMM, check_fixef, check_sigma, check_structure, check_theta

import bayesmix as bm
from bayesmix.errors import BayesmixWarning, DataError, FormulaError
from bayesmix.spec.design import Evaluator, model_matrix
from bayesmix.spec.formula import RandomTermSpec, parse_formula

REFERENCE = json.loads((Path(__file__).parent / "reference" / "issues" / "formulas.json").read_text())
NEWDATA = REFERENCE["predict_newdata"]


@pytest.fixture(scope="module")
def sleep():
    return bm.load_dataset("sleepstudy")


def fit_reference(key: str, theta: bool = True):
    entry = REFERENCE[key]
    case = entry.get("fit", entry)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.errors.SingularFitWarning)
        m = bm.lmer(case["formula"], bm.load_dataset(case["dataset"]))
    check_structure(m, case)
    check_fixef(m, case, LMM)
    if theta:
        check_theta(m, case, LMM)
    check_sigma(m, case, LMM)
    return m, case


def prediction_bound(m, case) -> float:
    """Predictions are sums of fixed and random effects, each within 1e-3 of lme4's SEs and SDs."""
    return 1e-3 * (np.sum(case["se"]) + m.sigma) * 10


# --- R's numbers for poly(), scale() and I() ------------------------------------------------


@pytest.mark.parametrize("key", ["poly_orthogonal", "poly_raw", "scale", "I_parentheses", "cake_interaction"])
def test_fits_match_lme4(key):
    fit_reference(key)


def test_poly_coefficients_and_basis_are_rs(sleep):
    ref = REFERENCE["poly_orthogonal"]
    ev = Evaluator(sleep)
    basis = ev.evaluate("poly(Days, 2)")
    np.testing.assert_allclose(basis[:10], ref["poly_basis_days_0_to_9"], atol=1e-14)
    params = ev.state.transforms["poly(Days, 2)"]
    np.testing.assert_allclose(params["alpha"], ref["poly_coefs_alpha"], rtol=1e-14)
    np.testing.assert_allclose(params["norm2"], ref["poly_coefs_norm2"], rtol=1e-14)
    new = Evaluator(pd.DataFrame({"Days": NEWDATA["new_days"]}), state=ev.state).evaluate("poly(Days, 2)")
    np.testing.assert_allclose(new, ref["poly_basis_new_days"], atol=1e-14)
    raw = Evaluator(pd.DataFrame({"Days": NEWDATA["new_days"]})).evaluate("poly(Days, 2, raw = TRUE)")
    np.testing.assert_allclose(raw, REFERENCE["poly_raw"]["poly_basis_new_days"], rtol=1e-15)


@pytest.mark.parametrize("key", ["poly_orthogonal", "poly_raw", "scale"])
def test_predictions_on_new_data_match_lme4(key, sleep):
    m, case = fit_reference(key)
    ref = REFERENCE[key]
    rows = [r - 1 for r in NEWDATA["rows_of_sleepstudy"]] if key != "scale" else [0, 1, 2]
    suffix = "1_5_10" if key != "scale" else "1_3"
    new = pd.DataFrame({"Days": NEWDATA["new_days"], "Subject": NEWDATA["new_subject"]})
    bound = prediction_bound(m, case)
    np.testing.assert_allclose(m.predict(newdata=sleep.iloc[rows]), ref[f"predict_rows_{suffix}"], atol=bound)
    np.testing.assert_allclose(m.predict(newdata=sleep.iloc[rows], re_form=np.nan), ref[f"predict_rows_{suffix}_re_form_NA"],
                               atol=bound)
    np.testing.assert_allclose(m.predict(newdata=new), ref["predict_new"], atol=bound)
    np.testing.assert_allclose(m.predict(newdata=new, re_form=np.nan), ref["predict_new_re_form_NA"], atol=bound)


def test_scale_keeps_the_training_center_and_scale(sleep):
    m = bm.lmer("Reaction ~ scale(Days) + (1 | Subject)", sleep)
    params = m.compiled.frame_state.transforms["scale(Days)"]
    assert params["center"] == pytest.approx(REFERENCE["scale"]["scale_center"], rel=1e-15)
    assert params["scale"] == pytest.approx(REFERENCE["scale"]["scale_scale"], rel=1e-14)
    np.testing.assert_allclose(m.predict(newdata=sleep.iloc[:3]), m.fitted()[:3], rtol=0, atol=1e-10)  # the example


@pytest.mark.parametrize("formula", list(REFERENCE["model_matrix_colnames"]))
def test_model_matrix_names_follow_rs_variable_order(formula):
    mm = model_matrix(formula.lstrip("~ "), Evaluator(bm.load_dataset("cake")))
    assert mm.names == REFERENCE["model_matrix_colnames"][formula]


# --- lme4's syntax --------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "dataset"), [("bare_bar_dyestuff", "Dyestuff"), ("bare_bar_sleepstudy", "sleepstudy")])
def test_a_bare_bar_is_read_as_lme4_reads_it(key, dataset):
    ref = REFERENCE[key]
    parsed = parse_formula(ref["fit"]["formula"])
    assert parsed.display == ref["formula_printed"]
    assert f"{parsed.response} ~ {parsed.fixed}" == ref["nobars"]
    assert [f"{t.expr} | {t.group}" for t in parsed.random] == ref["findbars"]
    fit_reference(key)


@pytest.mark.parametrize("key", ["doublebar_numeric", "doublebar_factor"])
def test_double_bars_expand_as_lme4_1_1_31(key):
    ref = REFERENCE[key]
    assert parse_formula(ref["fit"]["formula"]).display == ref["expandDoubleVerts"]
    # the factor case is singular: lme4 puts the intercept's θ at exactly 0, the optimizer here at 1e-6
    # (the engine's boundary handling, not the formula's business), so θ is not compared there
    m, _ = fit_reference(key, theta=key != "doublebar_factor")
    assert list(m.theta.index) == ref["theta_names"]


def test_double_bar_expands_interactions_term_by_term():
    p = parse_formula("y ~ (f * x + z || g)")
    assert [t.expr for t in p.random] == ["1", "0 + f", "0 + x", "0 + z", "0 + f:x"]  # R: expandDoubleVerts


def test_dot_stands_for_the_other_columns(sleep):
    data = sleep[["Reaction", "Days", "Subject"]]
    m = bm.lmer("Reaction ~ . + (1 | Subject)", data)
    assert list(m.fixef.index[:3]) == ["(Intercept)", "Days", "Subject309"]  # R includes the grouping column too
    p = parse_formula("log(y) ~ .:x + (1 | g)", columns=["y", "x", "z", "g"])
    assert p.fixed == "(x + z + g):x"


def test_a_random_term_joined_by_star_is_read_as_lme4_reads_it_with_a_warning(sleep):
    with pytest.warns(BayesmixWarning, match=r"does not interact with Days; for random slopes write \(Days \| Subject\)"):
        m = bm.lmer("Reaction ~ Days * (1 | Subject)", sleep)
    assert list(m.fixef.index) == ["(Intercept)", "Days"]  # lme4: fixef names of lmer(Reaction ~ Days*(1|Subject))


def test_comments_are_stripped():
    p = parse_formula("y ~ x + (1 | g)  # the model")
    assert p.display == "y ~ x + (1 | g)"


def test_offsets_inside_the_formula_and_nested_slash():
    p = parse_formula("y ~ x + offset(log(t)) + (1 | a/b)")
    assert p.offsets == ("log(t)",) and p.fixed == "x"
    assert p.random == (RandomTermSpec("1", "a"), RandomTermSpec("1", "b:a"))


# --- names ----------------------------------------------------------------------------------


def test_any_column_name_is_reachable(sleep):
    days = sleep.Days.to_numpy()
    data = sleep.assign(**{"größe": days, "log": days + 1, "total.days": days**2, "two words": np.sqrt(days)})
    data[7] = days**3
    m = bm.lmer("Reaction ~ größe + log(log) + total.days + `two words` + `7` + (1 | Subject)", data)
    # R's names: backticks only where R needs them (non-ASCII letters and dots need none)
    assert list(m.fixef.index) == ["(Intercept)", "größe", "log(log)", "total.days", "`two words`", "`7`"]


def test_duplicated_column_names_are_refused_by_name(sleep):
    data = pd.concat([sleep, sleep[["Days"]]], axis=1)
    with pytest.raises(DataError, match="more than one column named 'Days'"):
        bm.lmer("Reaction ~ Days + (1 | Subject)", data)


def test_integer_column_labels(sleep):
    data = sleep.rename(columns={"Days": 0, "Reaction": 1})
    m = bm.lmer("`1` ~ `0` + (1 | Subject)", data)
    assert list(m.fixef.index) == ["(Intercept)", "`0`"]  # R names a non-syntactic variable with backticks


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("Reaction ~ Days + (1 | Subject); 1", "';' separates R statements"),
        ("Reaction ~ Days ~ Subject + (1 | Subject)", "a formula has a single '~'"),
        ("Reaction ~ Days # + (1 | Subject)", r"'#' starts an R comment, and '# \+ \(1 \| Subject\)' was ignored"),
        ("Reaction ~ Days + (1 | Subject) + 'text'", "'\"text\"'"),
        ("Reaction ~ Days + offset((1 | Subject))", r"cannot be inside offset\(\)"),
        ("Reaction ~ Dayz + (1 | Subject)", r"column 'Dayz' not found in data \(columns: 'Reaction', 'Days', 'Subject'\)"),
        ("Reaction ~ foo(Days) + (1 | Subject)", r"unknown function foo\(\)"),
    ],
)
def test_errors_name_the_real_problem(formula, message, sleep):
    with pytest.raises(bm.BayesmixError, match=message):
        bm.lmer(formula, sleep)


# --- predictions on the training rows equal the fitted values -------------------------------


def _frame_with_extras():
    sleep = bm.load_dataset("sleepstudy")
    rng = np.random.default_rng(1)
    grade = pd.Categorical(rng.choice(["lo", "mid", "hi"], len(sleep)), categories=["lo", "mid", "hi", "none"], ordered=True)
    kind = pd.Categorical(rng.choice(["a", "b"], len(sleep)), categories=["a", "b", "unused"])
    return sleep.assign(grade=grade, kind=kind, expo=rng.uniform(1, 2, len(sleep)), label=rng.choice(["u", "v"], len(sleep)))


@pytest.mark.parametrize(
    "formula",
    [
        "Reaction ~ scale(Days) + (1 | Subject)",
        "Reaction ~ I(Days * (Days + 1)) + I(Days^2) + (1 | Subject)",
        "Reaction ~ log(Days + 1) + (Days | Subject)",
        "Reaction ~ poly(Days, 3) + (1 | Subject)",
        "Reaction ~ Days + kind + label + (1 | Subject)",  # a category column with an unused level, a text column
        "Reaction ~ Days + grade + (1 | Subject)",  # ordered: contr.poly over the levels used
        "Reaction ~ Days + offset(log(expo)) + (1 | Subject)",
        "Reaction ~ scale(Days, center = FALSE) * factor(Days > 4) + (scale(Days) | Subject)",
    ],
)
def test_predict_on_training_rows_equals_fitted(formula):
    data = _frame_with_extras()
    m = bm.lmer(formula, data)
    rows = data.iloc[[3, 0, 57, 179, 100]]
    np.testing.assert_allclose(m.predict(newdata=rows), m.fitted()[[3, 0, 57, 179, 100]], rtol=0, atol=1e-10)


def test_new_rows_use_the_training_levels_and_transforms():
    data = _frame_with_extras()
    m = bm.lmer("Reaction ~ scale(Days) + label + (1 | Subject)", data)
    one = data.iloc[[10]].assign(label="v")  # a text column with one value still has the training levels
    beta = m.fixef
    z = (data.Days.iloc[10] - data.Days.mean()) / data.Days.std()
    expected = beta["(Intercept)"] + beta["scale(Days)"] * z + beta["labelv"]
    assert m.predict(newdata=one, re_form=np.nan)[0] == pytest.approx(expected, rel=1e-12)


def test_the_compiled_model_keeps_a_small_picklable_state(sleep):
    import pickle

    m = bm.lmer("Reaction ~ poly(Days, 2) + (scale(Days) | Subject)", sleep)
    state = pickle.loads(pickle.dumps(m.compiled.frame_state))
    assert state == m.compiled.frame_state
    assert state.levels["Subject"][0][:2] == ("308", "309")


# --- hostile strings in every position ------------------------------------------------------

PAYLOADS = [
    "().__class__.__base__.__subclasses__()[0]",
    "__import__('os').system('touch {marker}')",
    "open('{marker}', 'w')",
    "eval(\"open('{marker}', 'w')\")",
    "Days.__class__",
    "getattr(Days, '__class__')",
    "[c for c in ()]",
    "lambda: open('{marker}', 'w')",
]

POSITIONS = {
    "response": lambda p: dict(formula=f"{p} ~ Days + (1 | Subject)"),
    "fixed term": lambda p: dict(formula=f"Reaction ~ {p} + (1 | Subject)"),
    "I()": lambda p: dict(formula=f"Reaction ~ I({p}) + (1 | Subject)"),
    "grouping factor": lambda p: dict(formula=f"Reaction ~ Days + (1 | {p})"),
    "random slope": lambda p: dict(formula=f"Reaction ~ Days + ({p} | Subject)"),
    "offset() term": lambda p: dict(formula=f"Reaction ~ Days + offset({p}) + (1 | Subject)"),
    "offset=": lambda p: dict(formula="Reaction ~ Days + (1 | Subject)", offset=p),
    "weights=": lambda p: dict(formula="Reaction ~ Days + (1 | Subject)", weights=p),
}


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("position", list(POSITIONS))
def test_hostile_strings_are_refused_and_run_nothing(position, payload, sleep, tmp_path):
    marker = tmp_path / "pwned"
    arguments = POSITIONS[position](payload.format(marker=marker))
    formula = arguments.pop("formula")
    with pytest.raises(FormulaError):
        bm.lmer(formula, sleep, **arguments)
    assert not marker.exists()


@pytest.mark.parametrize("payload", PAYLOADS)
def test_hostile_newdata_values_are_only_data(payload, sleep, tmp_path):
    marker = tmp_path / "pwned"
    m = bm.lmer("Reaction ~ Days + (1 | Subject)", sleep)
    newdata = pd.DataFrame({"Days": [1.0], "Subject": [payload.format(marker=marker)]})
    assert np.isfinite(m.predict(newdata=newdata)).all()  # an unseen level: population prediction
    newdata = pd.DataFrame({"Days": [payload.format(marker=marker)], "Subject": ["308"]})
    with pytest.raises(DataError):
        m.predict(newdata=newdata)
    assert not marker.exists()


# --- the model frame ------------------------------------------------------------------------


def test_a_grouping_interaction_of_many_levels(sleep):
    data = sleep.assign(copy=sleep.Subject.astype(str), half=(sleep.Days > 4).map({True: "late", False: "early"}))
    m = bm.lmer("Reaction ~ Days + (1 | Subject:half)", data)  # 36 combinations: codes past int8's range
    assert m.ngrps == {"Subject:half": 36}
    assert bm.lmer("Reaction ~ Days + (1 | Subject:copy)", data).ngrps == {"Subject:copy": 18}


def test_rows_whose_evaluated_variables_are_missing_are_dropped_as_r(sleep):
    with pytest.warns(bm.errors.DataWarning, match=r"144 rows with missing values removed \(missing in factor\(Days, levels = c\(1, 2\)\): 144\)"):
        m = bm.lmer("Reaction ~ factor(Days, levels = c(1, 2)) + (1 | Subject)", sleep)
    assert m.nobs == 36  # R: the other levels' rows become NA and na.omit drops them


def test_a_variable_to_a_power_is_the_variable_as_in_r(sleep, caplog):
    m = bm.lmer("Reaction ~ Days^2 + (1 | Subject)", sleep)
    assert list(m.fixef.index) == ["(Intercept)", "Days"]
    assert "zzv" not in caplog.text  # formulae's placeholders never reach the user
