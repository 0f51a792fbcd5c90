"""Bad input: a clear error (or warning) naming the problem, raised before any fitting."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm
from bayesmix.errors import SeparationWarning
from bayesmix.errors import FamilyError
from bayesmix.errors import PirlsError


@pytest.fixture
def no_fitting(monkeypatch):
    """Make any attempt to fit fail loudly: the checks must come first."""
    import bayesmix.api
    import bayesmix.engine.glmm

    def refuse(*args, **kwargs):
        raise AssertionError("fitting started before the input was rejected")

    monkeypatch.setattr(bayesmix.api, "fit_lmm", refuse)
    monkeypatch.setattr(bayesmix.engine.glmm, "fit_glmm", refuse)


@pytest.fixture
def sleep():
    return bm.load_dataset("sleepstudy")


@pytest.fixture
def cbpp():
    return bm.load_dataset("cbpp")


# --- formula and data ---------------------------------------------------------------------


def test_missing_column_is_named(sleep, no_fitting):
    with pytest.raises(bm.DataError, match=r"column 'Dayz' not found in data \(columns: 'Reaction', 'Days', 'Subject'\)"):
        bm.lmer("Reaction ~ Dayz + (1 | Subject)", sleep)


def test_missing_grouping_column_is_named(sleep, no_fitting):
    with pytest.raises(bm.DataError, match="'Subj' not found"):
        bm.lmer("Reaction ~ Days + (1 | Subj)", sleep)


def test_missing_weights_column_is_named(sleep, no_fitting):
    with pytest.raises(bm.DataError, match="'wt' not found"):
        bm.lmer("Reaction ~ Days + (1 | Subject)", sleep, weights="wt")


def test_non_numeric_response(sleep, no_fitting):
    data = sleep.assign(label=np.where(sleep["Days"] > 4, "late", "early"))
    with pytest.raises(bm.DataError, match="response 'label' is not numeric"):
        bm.lmer("label ~ Days + (1 | Subject)", data)


def test_formula_without_random_term(sleep, no_fitting):
    with pytest.raises(bm.FormulaError, match=r"no random-effects terms.*\(1 \| group\)"):
        bm.lmer("Reaction ~ Days", sleep)


def test_formula_without_tilde(sleep, no_fitting):
    with pytest.raises(bm.FormulaError, match="needs a response and '~'"):
        bm.lmer("Reaction + Days + (1 | Subject)", sleep)


def test_grouping_factor_with_a_single_level(sleep, no_fitting):
    with pytest.raises(bm.DataError, match="grouping factor 'site' has a single level \\('A'\\)"):
        bm.lmer("Reaction ~ Days + (1 | site)", sleep.assign(site="A"))


def test_lmer_grouping_factor_with_a_level_per_observation(sleep, no_fitting):
    data = sleep.assign(obs=[f"o{i}" for i in range(len(sleep))])
    with pytest.raises(bm.DataError, match=r"levels of grouping factor 'obs' \(180\) must be less than the number "
                                           r"of observations \(180\)"):
        bm.lmer("Reaction ~ Days + (1 | obs)", data)


def test_glmer_allows_a_level_per_observation():
    """An observation-level random effect is fine for a GLMM (grouseticks' INDEX), as in lme4."""
    # checked in the reference fits: grouseticks_poisson has (1 | INDEX) with 403 levels for 403 rows
    from conftest import cached_fit

    assert cached_fit("grouseticks_poisson").model.ngrps["INDEX"] == cached_fit("grouseticks_poisson").model.nobs


def test_empty_data(sleep, no_fitting):
    with pytest.raises(bm.DataError, match="data has no rows"):
        bm.lmer("Reaction ~ Days + (1 | Subject)", sleep.iloc[:0])


def test_data_that_is_not_a_data_frame(sleep, no_fitting):
    with pytest.raises(bm.DataError, match="must be a pandas DataFrame, got dict"):
        bm.lmer("Reaction ~ Days + (1 | Subject)", sleep.to_dict())


def test_all_rows_missing(sleep, no_fitting):
    with pytest.raises(bm.DataError, match="no rows left after removing rows with missing values"):
        with pytest.warns(UserWarning, match="180 rows with missing values removed"):
            bm.lmer("Reaction ~ Days + (1 | Subject)", sleep.assign(Reaction=np.nan))


def test_rows_with_missing_values_are_dropped_counted_and_warned(sleep):
    data = sleep.copy()
    data.loc[[0, 5, 9], "Reaction"] = np.nan
    data.loc[[5, 20], "Subject"] = np.nan  # row 5 twice: counted once
    data["unused"] = np.nan  # a column outside the model drops nothing
    with pytest.warns(UserWarning, match=r"4 rows with missing values removed \(missing in Reaction: 3, Subject: 2\)"):
        m = bm.lmer("Reaction ~ Days + (1 | Subject)", data)
    assert m.n_dropped == 4
    assert m.nobs == len(sleep) - 4
    reference = bm.lmer("Reaction ~ Days + (1 | Subject)", sleep.drop(index=[0, 5, 9, 20]))
    np.testing.assert_allclose(m.fixef, reference.fixef, rtol=1e-10)


def test_rank_deficient_fixed_effects_are_dropped_and_named(sleep):
    data = sleep.assign(Weeks=sleep["Days"] / 7)
    with pytest.warns(UserWarning, match=r"rank deficient so dropping 1 column / coefficient: Weeks"):
        m = bm.lmer("Reaction ~ Days + Weeks + (1 | Subject)", data)
    assert list(m.fixef.index) == ["(Intercept)", "Days"]
    assert m.compiled.dropped_fixef == ["Weeks"]
    reference = bm.lmer("Reaction ~ Days + (1 | Subject)", sleep)
    np.testing.assert_allclose(m.fixef, reference.fixef, rtol=1e-10)


def test_cbind_response_in_lmer(cbpp, no_fitting):
    with pytest.raises(bm.DataError, match="cbind.*binomial glmer"):
        bm.lmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp)


# --- families -----------------------------------------------------------------------------


def test_binomial_response_outside_0_1(sleep, no_fitting):
    with pytest.raises(FamilyError, match=r"binomial response must lie in \[0, 1\].*180 value\(s\) outside, e\.g\. 249\.56 in row 0"):
        bm.glmer("Reaction ~ Days + (1 | Subject)", sleep, family="binomial")


def test_negative_cbind_counts(cbpp, no_fitting):
    with pytest.raises(bm.DataError, match=r"negative counts in the response cbind\(incidence, incidence - size\)"):
        bm.glmer("cbind(incidence, incidence - size) ~ period + (1 | herd)", cbpp, family="binomial")


def test_non_integer_successes_warn(cbpp):
    data = cbpp.assign(prop=cbpp["incidence"] / cbpp["size"], trials=cbpp["size"] + 0.5)
    with pytest.warns(UserWarning, match="non-integer #successes"):
        bm.glmer("prop ~ period + (1 | herd)", data, family="binomial", weights="trials")


def test_negative_poisson_counts(sleep, no_fitting):
    data = sleep.assign(count=np.where(sleep["Days"] == 2, -1, 3))
    with pytest.raises(FamilyError, match=r"negative values are not allowed for the poisson family \(18 negative "
                                          r"response value\(s\), e\.g\. -1\)"):
        bm.glmer("count ~ Days + (1 | Subject)", data, family="poisson")


def test_non_positive_gamma_response(sleep, no_fitting):
    with pytest.raises(FamilyError, match=r"non-positive values are not allowed for the Gamma family \(18 response"):
        bm.glmer("Days ~ Reaction + (1 | Subject)", sleep, family="Gamma(log)")


def test_link_the_family_does_not_allow(cbpp, no_fitting):
    with pytest.raises(FamilyError, match="link 'logit' is not available for the poisson family; choose one of 'log', "
                                          "'identity', 'sqrt'"):
        bm.glmer("incidence ~ period + (1 | herd)", cbpp, family="poisson(logit)")


def test_unknown_family(cbpp, no_fitting):
    with pytest.raises(FamilyError, match="unknown family 'negbin'; available: binomial, poisson"):
        bm.glmer("incidence ~ period + (1 | herd)", cbpp, family="negbin")


def test_family_of_the_wrong_type(cbpp, no_fitting):
    with pytest.raises(FamilyError, match="family must be a name"):
        bm.glmer("incidence ~ period + (1 | herd)", cbpp, family=3)


@pytest.mark.parametrize("nAGQ", [-1, 2.5, "5"])
def test_nagq_must_be_a_non_negative_integer(cbpp, no_fitting, nAGQ):
    with pytest.raises(ValueError, match="nAGQ must be a non-negative integer"):
        bm.glmer("incidence ~ period + (1 | herd)", cbpp, family="poisson", nAGQ=nAGQ)


def test_nagq_with_a_vector_valued_term(no_fitting):
    data = bm.load_dataset("sleepstudy_aboveAve")
    with pytest.raises(ValueError, match=r"nAGQ = 5 > 1 is only available for models with a single, scalar "
                                         r"random-effects term; this model has \(Days \| Subject\)"):
        bm.glmer("aboveAve ~ Days + (Days | Subject)", data, family="binomial", nAGQ=5)


def test_nagq_with_several_terms(no_fitting):
    data = bm.load_dataset("grouseticks")
    with pytest.raises(ValueError, match=r"this model has \(1 \| BROOD\), \(1 \| LOCATION\)"):
        bm.glmer("TICKS ~ YEAR + (1 | BROOD) + (1 | LOCATION)", data, family="poisson", nAGQ=5)


# --- problems that only the fit reveals ---------------------------------------------------


def separated_data() -> pd.DataFrame:
    """Every observation with f == "b" is a success: f separates the outcome completely."""
    rng = np.random.default_rng(1)
    n = 120
    g = np.repeat(np.arange(12), 10)
    x = rng.normal(size=n)
    f = np.where(rng.random(n) < 0.5, "a", "b")
    eta = 0.5 * x + rng.normal(size=12)[g]
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
    y[f == "b"] = 1
    return pd.DataFrame({"y": y, "x": x, "f": pd.Categorical(f), "g": pd.Categorical([f"g{i}" for i in g])})


def test_complete_separation_warns_naming_the_effect():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = bm.glmer("y ~ x + f + (1 | g)", separated_data(), family="binomial")
    separation = [w for w in caught if issubclass(w.category, SeparationWarning)]
    assert len(separation) == 1
    text = str(separation[0].message)
    assert "fitted probabilities numerically 0 or 1" in text
    assert "the estimates of fb (" in text  # the separating effect, named
    assert "(Intercept) (" not in text and "x (" not in text  # and only it
    assert abs(m.fixef["fb"]) > 100


def test_no_separation_warning_for_an_ordinary_binomial_fit():
    data = separated_data()
    data["y"] = (np.random.default_rng(2).random(len(data)) < 0.5).astype(int)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bm.glmer("y ~ x + f + (1 | g)", data, family="binomial")
    assert not [w for w in caught if issubclass(w.category, SeparationWarning)]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's NaN noise on the way to the error
def test_pirls_failure_says_what_to_try():
    """An identity-link Poisson model whose straight line must go negative: PIRLS cannot proceed."""
    x = np.tile(np.arange(10.0), 6)
    data = pd.DataFrame({"y": np.where(x < 5, 50, 0), "x": x, "g": np.repeat([f"g{i}" for i in range(6)], 10)})
    with pytest.raises(PirlsError, match="PIRLS.*try .*nAGQ=0"):
        bm.glmer("y ~ x + (1 | g)", data, family="poisson(identity)")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_pirls_step_halving_failure_says_what_to_try():
    """A log-link binomial whose fitted probabilities would exceed 1."""
    x = np.tile(np.arange(10.0), 6)
    data = pd.DataFrame({"y": (x > 3).astype(int), "x": x, "g": np.repeat([f"g{i}" for i in range(6)], 10)})
    with pytest.raises(PirlsError, match="step-halvings failed.*try rescaling covariates or nAGQ=0"):
        bm.glmer("y ~ x + (1 | g)", data, family="binomial(log)")
