"""lme4's printed summary: exact from lme4's own numbers, within tolerance from our fits.

Every expected string in this file was printed by R 4.2.2 (lme4 1.1-31); the R code that
printed it is quoted next to it.  R is never called from the tests.  ``fits`` (one fit
per reference case per session) comes from conftest.py.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

import bayesmix as bm
from bayesmix.engine.families import get_family
from bayesmix.results.printing import (
    RandomEffectBlock,
    SummaryParts,
    convergence_lines,
    correlation_from_vcov,
    format_summary,
    render_summary,
    summary_parts,
)
from bayesmix.rformat import (
    print_coefmat,
    print_matrix,
    r_abbreviate,
    r_format,
    r_format_pval,
    r_round,
    r_zapsmall,
    signif_stars,
)
from bayesmix.spec.formula import parse_formula
from bayesmix.spec.rexpr import deparse_lines

REFERENCE = Path(__file__).parent / "reference"
CASES = sorted(p.stem for p in REFERENCE.glob("*.json") if p.stem != "inference")
SLOW_CASES = {"instEval_crossed_ml"}  # 73k rows: about a minute to fit


def load_case(name: str) -> dict:
    return json.loads((REFERENCE / f"{name}.json").read_text())


def parts_from_reference(d: dict) -> SummaryParts:
    """What lme4's summary shows, built from lme4's own numbers in a reference case."""
    blocks: dict[str, dict] = {}
    for row in d["varcorr"]:
        if row["grp"] == "Residual":
            continue
        block = blocks.setdefault(row["grp"], {"names": [], "sd": [], "corr": {}})
        if row["var2"]:
            block["corr"][(row["var1"], row["var2"])] = row["sdcor"]
        else:
            block["names"].append(row["var1"])
            block["sd"].append(row["sdcor"])
    random_effects = []
    for group, block in blocks.items():
        names = block["names"]
        corr = np.eye(len(names))
        for (a, b), value in block["corr"].items():
            corr[names.index(a), names.index(b)] = corr[names.index(b), names.index(a)] = value
        random_effects.append(RandomEffectBlock(group, names, np.array(block["sd"]), corr))
    residual = [row["sdcor"] for row in d["varcorr"] if row["grp"] == "Residual"]
    lmm = d["family"] == "gaussian"
    family = None if lmm else get_family(d["family"])
    est, se = np.array(d["fixef"]), np.array(d["se"])
    table = pd.DataFrame({"Estimate": est, "Std. Error": se}, index=d["fixef_names"])
    table["t value" if lmm or family.has_scale else "z value"] = est / se
    if not lmm:
        table["Pr(>|z|)"] = 2 * norm.sf(np.abs(est / se))
    singular = ["boundary (singular) fit: see help('isSingular')"] if d["singular"] else []
    return SummaryParts(
        is_lmm=lmm, reml=bool(d["REML"]), nagq=d["nAGQ"],
        family=None if lmm else family.name, link=None if lmm else family.link.name,
        formula=parse_formula(d["formula"]).display,
        # the reference script called lmer(f, data = df, weights = df[[weights]])
        data_name="df", weights_name="df[[weights]]" if d["weights"] else None, offset_name=None,
        reml_criterion=d["reml_criterion"], aic=d["aic"], bic=d["bic"], loglik=d["loglik"], df_resid=d["df_resid"],
        residual_quantiles=d["scaled_resid_quantiles"], random_effects=random_effects,
        residual_sd=residual[0] if residual else None, nobs=d["nobs"], ngrps=d["ngrps"], coef_table=table,
        fixef_correlation=correlation_from_vcov(d["vcov"]),
        convergence=convergence_lines(singular, optimizer="nloptwrap" if lmm else "Nelder_Mead"),
    )


# --- the layout, from lme4's numbers: identical text ------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_summary_from_lme4_numbers_is_lme4_text(name):
    d = load_case(name)
    assert render_summary(parts_from_reference(d)).split("\n") == d["summary_text"].split("\n")


# --- our fits: same lines and labels, numbers within the project's tolerances -----------------

NUMBER = re.compile(r"(?<![^\s<])[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?(?=[\s,;]|$)")
SECTIONS = {"Scaled residuals:": "residuals", "Random effects:": "random", "Fixed effects:": "fixed",
            "Correlation of Fixed Effects:": "correlation", "---": "exact", "fit warnings:": "exact"}


def skeleton(line: str) -> str:
    """A line with its numbers replaced and runs of blanks collapsed: labels and order only."""
    return " ".join(NUMBER.sub("#", line).split())


def printed_numbers(line: str) -> list[tuple[float, float]]:
    """Each number on a line with the size of one unit in its last printed digit."""
    out = []
    for m in NUMBER.finditer(line):
        text = m.group()
        mantissa, _, exponent = text.partition("e")
        decimals = len(mantissa.partition(".")[2])
        out.append((float(text), 10.0 ** (int(exponent or 0) - decimals)))
    return out


def comparable_reference(d: dict) -> list[str]:
    """lme4's text, with what the reference script (not lme4) decided put the way a user sees it."""
    text = d["summary_text"]
    if d["weights"]:  # the script passed weights = df[[weights]]; weights = "size" prints "Weights: size"
        text = text.replace("Weights: df[[weights]]", f"Weights: {d['weights']}")
    return text.split("\n")


def any_optimizer(lines: list[str]) -> list[str]:
    """Our optimizer is not lme4's: "optimizer (nloptwrap)" names a different program, and ours
    depends on the model (L-BFGS-B on an exact gradient for small LMMs, else BOBYQA; test_results_record)."""
    return [re.sub(r"optimizer \([\w-]+\)", "optimizer (NAME)", line) for line in lines]


def assert_close_summaries(ours: str, ref_lines: list[str], glmm: bool, check_criterion: bool = True):
    """Same lines and labels; every number as close as the team guide asks of the estimate it shows."""
    tol_sd = 2e-2 if glmm else 2e-3  # SEs, SDs: relative; correlations: absolute
    tol_fe = 2e-2 if glmm else 1e-3  # fixed effects: in SEs
    ours_lines = any_optimizer(ours.split("\n"))
    ref_lines = any_optimizer(ref_lines)
    assert [skeleton(x) for x in ours_lines] == [skeleton(x) for x in ref_lines]
    section = "header"
    for mine, ref in zip(ours_lines, ref_lines):
        section = "exact" if ref.startswith("optimizer (") else SECTIONS.get(ref.strip(), section)
        a, b = printed_numbers(mine), printed_numbers(ref)
        if not a:
            continue
        slack = [ua + ub for (_, ua), (_, ub) in zip(a, b)]
        x, y = [v for v, _ in a], [v for v, _ in b]
        where = f"{section}: {mine!r} vs lme4 {ref!r}"
        if ref.startswith("Number of obs") or section == "exact":
            assert x == y, where
        elif section == "header":
            if check_criterion:
                # the criterion: as lme4's to its printed digits (a GLMM's may be a little better)
                for i, (u, v) in enumerate(zip(x, y)):
                    assert abs(u - v) <= slack[i] + (0.1 if glmm else 0.0), where
        elif section == "residuals":
            for i, (u, v) in enumerate(zip(x, y)):
                assert abs(u - v) <= slack[i] + tol_sd * max(1.0, abs(v)), where
        elif section == "random":  # variance, SD, correlations
            assert abs(x[0] - y[0]) <= slack[0] + 2 * tol_sd * abs(y[0]), where
            assert abs(x[1] - y[1]) <= slack[1] + tol_sd * abs(y[1]), where
            for i in range(2, len(x)):
                assert abs(x[i] - y[i]) <= slack[i] + tol_sd, where
        elif section == "fixed":  # estimate, SE, t or z, p
            est, se = y[0], y[1]
            assert abs(x[0] - est) <= slack[0] + tol_fe * se, where
            assert abs(x[1] - se) <= slack[1] + tol_sd * se, where
            dz = tol_fe + tol_sd * abs(y[2])
            assert abs(x[2] - y[2]) <= slack[2] + dz, where
            if len(x) > 3:
                assert abs(math.log(x[3] / y[3])) <= (abs(y[2]) + 1) * dz + slack[3] / y[3], where
        elif section == "correlation":
            for i, (u, v) in enumerate(zip(x, y)):
                assert abs(u - v) <= slack[i] + tol_sd, where


def _fit_params(exclude=()):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_CASES else n for n in CASES if n not in exclude]


@pytest.mark.parametrize("name", _fit_params())
def test_fitted_summary_has_lme4_lines_and_numbers(name, fits):
    d = load_case(name)
    ours = fits(name).model.summary()
    assert_close_summaries(ours, comparable_reference(d), glmm=d["family"] != "gaussian", check_criterion=False)


@pytest.mark.parametrize("name", [
    n for n in _fit_params()
])
def test_fitted_summary_criterion_matches_lme4(name, fits):
    d = load_case(name)
    ours = fits(name).model.summary().split("\n")
    ref = comparable_reference(d)
    header_end = ref.index("Scaled residuals: ")
    assert_close_summaries("\n".join(ours[:header_end]), ref[:header_end], glmm=d["family"] != "gaussian")


def test_summary_method_is_format_summary(fits):
    result = fits("sleepstudy_intercept_reml").model
    assert result.summary() == format_summary(result)
    assert str(result) == format_summary(result)


# --- rows with missing values, a rank-deficient X, names of data and weights -----------------

# s <- sleepstudy; s$Reaction[c(3, 50, 100)] <- NA; df <- s
# print(summary(lmer(Reaction ~ Days + (Days | Subject), df)))
SLEEPSTUDY_NA_SUMMARY = """\
Linear mixed model fit by REML ['lmerMod']
Formula: Reaction ~ Days + (Days | Subject)
   Data: df

REML criterion at convergence: 1712.5

Scaled residuals: 
    Min      1Q  Median      3Q     Max 
-4.0744 -0.4622  0.0174  0.4687  5.2357 

Random effects:
 Groups   Name        Variance Std.Dev. Corr
 Subject  (Intercept) 648.16   25.459       
          Days         35.48    5.957   0.05
 Residual             641.24   25.323       
Number of obs: 177, groups:  Subject, 18

Fixed effects:
            Estimate Std. Error t value
(Intercept)  252.417      6.969  36.222
Days          10.245      1.556   6.583

Correlation of Fixed Effects:
     (Intr)
Days -0.148"""


def test_rows_with_missing_values_are_reported():
    """lme4 shows dropped rows only through "Number of obs"; we add summary.lm's line
    "(N observations deleted due to missingness)" under it, and otherwise print lme4's text."""
    sleep = bm.load_dataset("sleepstudy").copy()
    sleep.loc[[2, 49, 99], "Reaction"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = bm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    assert m.n_dropped == 3
    lines = m.summary().split("\n")
    at = lines.index("Number of obs: 177, groups:  Subject, 18")
    assert lines[at + 1] == "  (3 observations deleted due to missingness)"
    del lines[at + 1]
    assert_close_summaries("\n".join(lines), SLEEPSTUDY_NA_SUMMARY.split("\n"), glmm=False)


# df <- sleepstudy; df$Days2 <- df$Days * 2
# print(summary(lmer(Reaction ~ Days + Days2 + (1 | Subject), df)))   (the tail of it)
RANK_DEFICIENT_TAIL = """\
Fixed effects:
            Estimate Std. Error t value
(Intercept) 251.4051     9.7467   25.79
Days         10.4673     0.8042   13.02

Correlation of Fixed Effects:
     (Intr)
Days -0.371
fit warnings:
fixed-effect model matrix is rank deficient so dropping 1 column / coefficient"""


def test_rank_deficient_model_matrix_prints_fit_warning():
    sleep = bm.load_dataset("sleepstudy").copy()
    sleep["Days2"] = sleep["Days"] * 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = bm.lmer("Reaction ~ Days + Days2 + (1 | Subject)", sleep)
    assert m.summary().endswith(RANK_DEFICIENT_TAIL)


def test_data_and_weights_names_are_printed():
    sleep = bm.load_dataset("sleepstudy").copy()
    sleep["w"] = 1.0
    m = bm.lmer("Reaction ~ Days + (1 | Subject)", sleep, weights="w", data_name="sleepstudy")
    lines = m.summary().split("\n")
    assert lines[1:4] == ["Formula: Reaction ~ Days + (1 | Subject)", "   Data: sleepstudy", "Weights: w"]


def test_correlation_argument_forces_the_block_on_or_off():
    parts = parts_from_reference(load_case("sleepstudy_slope_reml"))
    assert "Correlation of Fixed Effects:" in render_summary(parts)
    assert "Correlation of Fixed Effects:" not in render_summary(parts, correlation=False)
    big = parts_from_reference(load_case("instEval_crossed_ml"))  # p = 28 > 12: off by default
    assert "Correlation of Fixed Effects:" not in render_summary(big)
    assert "Correlation of Fixed Effects:" in render_summary(big, correlation=True)


def test_convergence_lines_open_with_the_optimizer_code():
    singular = "boundary (singular) fit: see help('isSingular')"
    assert convergence_lines([singular]) == ["optimizer (bobyqa) convergence code: 0 (OK)", singular]
    assert convergence_lines([]) == []
    given = ["optimizer (bobyqa) convergence code: 1 (did not converge)"]
    assert convergence_lines(given, converged=False) == given


# --- R's formatting functions, against R's output ----------------------------------------------

# format(x, digits = digits)
FORMAT_CASES = [
    ([1763.9, 1783.1, -876, 1751.9, 174], 7, ["1763.9", "1783.1", "-876.0", "1751.9", " 174.0"]),
    ([0, 13.8133], 4, [" 0.00", "13.81"]),
    ([0.000474, 0.0010684, 0.000182], 3, ["0.000474", "0.001068", "0.000182"]),
    ([123456.7, 0.001234], 4, ["1.235e+05", "1.234e-03"]),
    ([9996, 1], 3, ["9996", "   1"]),
    ([99999.5, 0.5], 4, ["1e+05", "5e-01"]),
    ([-1e-7, 1], 4, ["-1e-07", " 1e+00"]),
    ([1e-300, 1e300], 7, ["1e-300", "1e+300"]),
    ([0.1 + 0.2, 1 / 3], 7, ["0.3000000", "0.3333333"]),
    ([1.47e-09], 3, ["1.47e-09"]),
    ([2.5, 3.5, -0.5], 1, [" 2.5", " 3.5", "-0.5"]),
    ([0.99996, 12], 4, [" 1", "12"]),
    ([1234567.8], 7, ["1234568"]),
    ([-0.0, 0.123456], 2, ["0.00", "0.12"]),
]


@pytest.mark.parametrize("values, digits, expected", FORMAT_CASES)
def test_r_format(values, digits, expected):
    assert r_format(values, digits) == expected


def test_r_format_nsmall():
    # format(round(c(1, -0.70710678, 0.5, 0.123456), 3), nsmall = 3)
    values = [r_round(v, 3) for v in [1, -0.70710678, 0.5, 0.123456]]
    assert r_format(values, nsmall=3) == [" 1.000", "-0.707", " 0.500", " 0.123"]


# round(x, digits)
ROUND_CASES = [(0.15, 1, 0.1), (2.675, 2, 2.67), (-0.5, 0, -0.0), (1.005, 2, 1.0), (12345.6789, -2, 12300.0),
               (0.285, 2, 0.28), (-2.5, 0, -2.0), (1.23456, 2.4, 1.23), (1.23456, 2.6, 1.235), (246.99, 1, 247.0),
               (0.0005, 3, 0.0)]


@pytest.mark.parametrize("x, digits, expected", ROUND_CASES)
def test_r_round(x, digits, expected):
    assert r_round(x, digits) == expected


def test_r_zapsmall():
    # zapsmall(c(-3.95362, 0.023133, 5.179323), 5); zapsmall(c(-0.00001234, 2.5), 5)
    assert list(r_zapsmall([-3.95362, 0.023133, 5.179323], 5)) == [-3.9536, 0.0231, 5.1793]
    assert list(r_zapsmall([-0.00001234, 2.5], 5)) == [-1e-05, 2.5]


# format.pval(pv, digits = 3)
PVAL_CASES = [
    ([1e-20, 0.5, 0.01], ["<2e-16", "0.50", "0.01"]),
    ([1e-20, 0.5, 0.0001234], ["< 2e-16", "0.500000", "0.000123"]),
    ([1e-20, 1e-10], ["<2e-16", "1e-10"]),
    ([1e-20], ["<2e-16"]),
    ([0.0576432, 7.15e-07, 0.000196, 4.83e-12], ["0.057643", "7.15e-07", "0.000196", "4.83e-12"]),
    ([0.623343, 0.000629, 0.094222, 3.82e-05, 4.42e-16, 5.37e-07],
     ["0.623343", "0.000629", "0.094222", "3.82e-05", "4.42e-16", "5.37e-07"]),
    ([0.5, 0.2], ["0.5", "0.2"]),
]


@pytest.mark.parametrize("pvalues, expected", PVAL_CASES)
def test_r_format_pval(pvalues, expected):
    assert r_format_pval(pvalues, 3) == expected


def test_signif_stars():
    # symnum(p, corr = FALSE, cutpoints = c(0, .001, .01, .05, .1, 1), symbols = c("***", "**", "*", ".", " "))
    p = [0, 0.0005, 0.001, 0.005, 0.01, 0.03, 0.05, 0.07, 0.1, 0.5, 1]
    assert signif_stars(p) == ["***", "***", "***", "**", "**", "*", "*", ".", ".", " ", " "]


ABBREV_NAMES = ["(Intercept)", "recipeB:temp", "btypescold", "btypeshout", "situself", "GenderM", "Anger",
                "service1:dept10", "period2", "cHEIGHT", "YEAR96", "a b c d", "Days", "x", "I(Days^2)", "log(x)",
                "abcdefgh1", "abcdefgh2", "Species:Petal.Width", "poly(x, 2)1"]
# unname(abbreviate(ABBREV_NAMES, minlength))
ABBREVIATIONS = {
    4: ["(In)", "rcB:", "btypsc", "btypsh", "stsl", "GndM", "Angr", "s1:1", "prd2", "cHEI", "YEAR", "abcd", "Days",
        "x", "I(D^", "lg()", "abc1", "abc2", "S:P.", "p(,2"],
    6: ["(Intr)", "rcpB:t", "btypsc", "btypsh", "sitslf", "GendrM", "Anger", "sr1:10", "perid2", "cHEIGH", "YEAR96",
        "abcd", "Days", "x", "I(D^2)", "log(x)", "abcdf1", "abcdf2", "Sp:P.W", "p(,2)1"],
    11: ["(Intercept)", "recipeB:tmp", "btypescold", "btypeshout", "situself", "GenderM", "Anger", "srvc1:dpt10",
         "period2", "cHEIGHT", "YEAR96", "a b c d", "Days", "x", "I(Days^2)", "log(x)", "abcdefgh1", "abcdefgh2",
         "Spcs:Ptl.Wd", "poly(x, 2)1"],
}


@pytest.mark.parametrize("minlength", sorted(ABBREVIATIONS))
def test_r_abbreviate(minlength):
    assert r_abbreviate(ABBREV_NAMES, minlength) == ABBREVIATIONS[minlength]


# deparse(formula)
DEPARSE_CASES = [
    ("y ~ aaaaaaaaaa + bbbbbbbbbbbb + cccccccccccc + dddddddddd + eeeeeeeeeee + ffffffffffffff + gggggggggggggg"
     " + hhhhhhhhhhhhhhh + iiiiiiiiiiiiii + jjjjjjjjjjjjjj + kkkkkkkkkkkkk + (1 | ffffffffff) + (1 | gggggggggggg)",
     ["y ~ aaaaaaaaaa + bbbbbbbbbbbb + cccccccccccc + dddddddddd + eeeeeeeeeee + ",
      "    ffffffffffffff + gggggggggggggg + hhhhhhhhhhhhhhh + iiiiiiiiiiiiii + ",
      "    jjjjjjjjjjjjjj + kkkkkkkkkkkkk + (1 | ffffffffff) + (1 | ",
      "    gggggggggggg)"]),
    ("yyyyyyyyyyyyyyyyyyyyyyy ~ aaaaaaaaaa * bbbbbbbbbbbb + cccccccccccc:dddddddddd + log(eeeeeeeeeee + 1)"
     " + (1 + ffffffffffffff | gggggggggggggg) + (0 + hhhhhhhhhhhhhhh || iiiiiiiiiiiiii)",
     ["yyyyyyyyyyyyyyyyyyyyyyy ~ aaaaaaaaaa * bbbbbbbbbbbb + cccccccccccc:dddddddddd + ",
      "    log(eeeeeeeeeee + 1) + (1 + ffffffffffffff | gggggggggggggg) + ",
      "    (0 + hhhhhhhhhhhhhhh || iiiiiiiiiiiiii)"]),
    ("y ~ aaaaaaaaaa + bbbbbbbbbbbb + cccccccccccc + dddddddddd + I(eeeeeeeeeee^2) + offset(log(ffffffffffffff))"
     " + (1 | ffffffffff/gggggggggggg)",
     ["y ~ aaaaaaaaaa + bbbbbbbbbbbb + cccccccccccc + dddddddddd + I(eeeeeeeeeee^2) + ",
      "    offset(log(ffffffffffffff)) + (1 | ffffffffff/gggggggggggg)"]),
    ("cbind(incidence, size - incidence) ~ period + (1 | herd)",
     ["cbind(incidence, size - incidence) ~ period + (1 | herd)"]),
    ("yy ~ some_long_function_name(argument_one, argument_two, argument_three, argument_four) + (1 | g)",
     ["yy ~ some_long_function_name(argument_one, argument_two, argument_three, ",
      "    argument_four) + (1 | g)"]),
]


@pytest.mark.parametrize("text, expected", DEPARSE_CASES)
def test_r_deparse_lines(text, expected):
    assert deparse_lines(text) == expected


def test_long_formula_wraps_like_lme4():
    # lme4:::.prt.call(list(formula = <the first formula above>, data = quote(df)))
    parts = parts_from_reference(load_case("dyestuff_reml"))
    parts.formula = DEPARSE_CASES[0][0]
    lines = render_summary(parts).split("\n")
    # cat(fill = TRUE) puts deparse's last, short line after the one before it
    assert lines[1:6] == ["Formula: ",
                          "y ~ aaaaaaaaaa + bbbbbbbbbbbb + cccccccccccc + dddddddddd + eeeeeeeeeee +  ",
                          "    ffffffffffffff + gggggggggggggg + hhhhhhhhhhhhhhh + iiiiiiiiiiiiii +  ",
                          "    jjjjjjjjjjjjjj + kkkkkkkkkkkkk + (1 | ffffffffff) + (1 |      gggggggggggg)",
                          "   Data: df"]


def test_many_groups_wrap_the_number_of_obs_line():
    # cat(sprintf("Number of obs: %d, groups: ", 73421L), "aaaaaaaaaaaaaaa, 1000; ...", fill = TRUE)
    parts = parts_from_reference(load_case("dyestuff_reml"))
    parts.nobs = 73421
    parts.ngrps = {"aaaaaaaaaaaaaaa": 1000, "bbbbbbbbbbbbbbbbbbbbb": 2000, "cccccccccccccccccc": 3000}
    lines = render_summary(parts).split("\n")
    i = lines.index("Number of obs: 73421, groups:  ")
    assert lines[i + 1] == "aaaaaaaaaaaaaaa, 1000; bbbbbbbbbbbbbbbbbbbbb, 2000; cccccccccccccccccc, 3000"


# printCoefmat(x, digits = 4) for x <- cbind(Estimate = est, "Std. Error" = se, <stat> = est / se[,
#   "Pr(>|z|)" = 2 * pnorm(abs(est / se), lower.tail = FALSE)])
COEFMAT_CASES = [
    ([1.03723, 0.24596], [0.14270, 0.05232], "t value", True, ["(Intercept)", "x"], [
        "            Estimate Std. Error t value Pr(>|z|)    ",
        "(Intercept)  1.03723    0.14270   7.269 3.63e-13 ***",
        "x            0.24596    0.05232   4.701 2.59e-06 ***",
        "---",
        "Signif. codes:  0 ‘***’ 0.001 ‘**’ 0.01 ‘*’ 0.05 ‘.’ 0.1 ‘ ’ 1"]),
    ([1e-9, 2], [3, 4], "t value", False, ["a", "b"], [
        "  Estimate Std. Error t value",
        "a    1e-09      3e+00     0.0",
        "b    2e+00      4e+00     0.5"]),
    ([0.1, -0.2], [0.5, 0.4], "z value", True, ["(Intercept)", "x"], [
        "            Estimate Std. Error z value Pr(>|z|)",
        "(Intercept)      0.1        0.5     0.2    0.841",
        "x               -0.2        0.4    -0.5    0.617"]),
    ([5.2, 30.1, -0.4], [0.2, 0.9, 0.05], "z value", True,
     ["(Intercept)", "x", "a_really_long_coefficient_name_that_is_very_long_indeed"], [
         "                                                        Estimate Std. Error",
         "(Intercept)                                                 5.20       0.20",
         "x                                                          30.10       0.90",
         "a_really_long_coefficient_name_that_is_very_long_indeed    -0.40       0.05",
         "                                                        z value Pr(>|z|)    ",
         "(Intercept)                                               26.00  < 2e-16 ***",
         "x                                                         33.44  < 2e-16 ***",
         "a_really_long_coefficient_name_that_is_very_long_indeed   -8.00 1.24e-15 ***",
         "---",
         "Signif. codes:  0 ‘***’ 0.001 ‘**’ 0.01 ‘*’ 0.05 ‘.’ 0.1 ‘ ’ 1"]),
    ([1527.5, 0.00001], [17.69, 0.5], "t value", False, ["(Intercept)", "tiny"], [
        "             Estimate Std. Error t value",
        "(Intercept) 1.528e+03  1.769e+01   86.35",
        "tiny        1.000e-05  5.000e-01    0.00"]),
    ([0, 1.5], [0.3, 0.2], "t value", False, ["zero", "x"], [
        "     Estimate Std. Error t value",
        "zero      0.0        0.3     0.0",
        "x         1.5        0.2     7.5"]),
]


@pytest.mark.parametrize("est, se, stat, with_p, rows, expected", COEFMAT_CASES)
def test_print_coefmat(est, se, stat, with_p, rows, expected):
    est, se = np.array(est, dtype=float), np.array(se, dtype=float)
    columns = [est, se, est / se] + ([2 * norm.sf(np.abs(est / se))] if with_p else [])
    names = ["Estimate", "Std. Error", stat] + (["Pr(>|z|)"] if with_p else [])
    assert print_coefmat(pd.DataFrame(np.column_stack(columns), index=rows, columns=names), 4) == expected


def test_print_matrix_wraps_columns_at_the_console_width():
    # m <- matrix(c("-0.707", " 0.500", letters[1:11]), 2, 13,
    #             dimnames = list(c("rowname_long1", "r2"), paste0("colnm", 1:13)));  print(m, quote = FALSE)
    values = ["-0.707", " 0.500"] + list("abcdefghijk")
    flat = [values[k % len(values)] for k in range(26)]
    cells = [[flat[j * 2 + i] for j in range(13)] for i in range(2)]
    lines = print_matrix(cells, ["rowname_long1", "r2"], [f"colnm{j}" for j in range(1, 14)])
    assert lines == [
        "              colnm1 colnm2 colnm3 colnm4 colnm5 colnm6 colnm7 colnm8 colnm9",
        "rowname_long1 -0.707 a      c      e      g      i      k       0.500 b     ",
        "r2             0.500 b      d      f      h      j      -0.707 a      c     ",
        "              colnm10 colnm11 colnm12 colnm13",
        "rowname_long1 d       f       h       j      ",
        "r2            e       g       i       k      ",
    ]


def test_summary_parts_of_a_fit_carry_its_numbers(fits):
    result = fits("sleepstudy_slope_reml").model
    parts = summary_parts(result)
    assert parts.nobs == 180 and parts.ngrps == {"Subject": 18}
    assert parts.reml_criterion == pytest.approx(result.reml_criterion)
    assert parts.random_effects[0].names == ["(Intercept)", "Days"]
    assert parts.residual_sd == pytest.approx(result.sigma)


def test_offset_argument_is_printed_as_lme4_does():
    """R: d <- sleepstudy; d$o <- d$Days * 0.5; print(summary(lmer(Reaction ~ Days + (1|Subject), d, offset = o)))
    prints " Offset: o" under "   Data: d"."""
    sleep = bm.load_dataset("sleepstudy").assign(o=lambda d: d.Days * 0.5)
    lines = bm.lmer("Reaction ~ Days + (1 | Subject)", sleep, offset="o", data_name="d").summary().split("\n")
    assert lines[1:4] == ["Formula: Reaction ~ Days + (1 | Subject)", "   Data: d", " Offset: o"]
    assert lines[5] == "REML criterion at convergence: 1786.5"
