"""How results show in Jupyter: a fit as HTML tables, rounded tables, anova rows named after the call's arguments.

Numbers shown are lme4 1.1-31's for sleepstudy (``print(summary(fm1))``: 251.405, 6.825, 24.741...;
``anova(fm0, fm1)``: npar 4 and 6, Chisq 42.139, Df 2), rounded as the display rounds them.
"""

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm
from bayesmix.results.display import DisplayTable, format_pvalue, format_value, rounded


@pytest.fixture(scope="module")
def sleep():
    return bm.load_dataset("sleepstudy")


@pytest.fixture(scope="module")
def fits(sleep):
    return (bm.lmer("Reaction ~ Days + (1 | Subject)", sleep),
            bm.lmer("Reaction ~ Days + (Days | Subject)", sleep))


def test_fit_html_has_three_tables_and_the_lme4_text_folded(fits):
    page = fits[1]._repr_html_()
    assert page.count("<table") == 3
    for caption in ("Fit", "Random effects", "Fixed effects"):
        assert f">{caption}</caption>" in page
    # lme4's summary text, escaped, inside a collapsed <details>
    assert "<details><summary>" in page and "REML criterion at convergence: 1743.6" in page
    assert page.index("<details>") > page.rindex("</table>")
    for shown in (">251.4<", ">6.825<", ">24.74<", ">5.922<", ">25.59<", ">0.07<", ">1743.6<", ">180<", ">18<"):
        assert shown in page, shown


def test_glmm_html_shows_aic_and_p_values():
    cbpp = bm.load_dataset("cbpp")
    g = bm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial")
    page = g._repr_html_()
    assert "family binomial (logit)" in page
    assert ">194.1<" in page  # AIC, lme4: 194.1
    assert "Pr(&gt;|z|)" in page


def test_display_rounds_but_keeps_numbers(fits):
    table = fits[1].coef_table
    assert isinstance(table, DisplayTable)
    assert table.loc["Days", "Estimate"] == pytest.approx(10.467285959596, abs=1e-6)
    text = repr(table)
    assert "251.4" in text and "251.405" not in text


def test_format_value_and_pvalue():
    assert format_value(251.405105) == "251.4"
    assert format_value(0.0660275) == "0.06603"
    assert format_value(12345.6) == "12346"
    assert format_value(np.nan) == ""
    assert format_pvalue(7.072e-10) == "7.07e-10"
    assert format_pvalue(1e-20) == "< 2.2e-16"
    assert format_pvalue(0.0312) == "0.0312"
    frame = rounded(pd.DataFrame({"npar": [4.0, 6.0], "Df": [np.nan, 2.0]}))
    assert frame["npar"].tolist() == ["4", "6"] and frame["Df"].tolist() == ["", "2"]


def test_anova_names_rows_after_the_arguments_and_npar_is_integer(fits, capsys):
    def inside_a_function():
        small, large = fits
        return bm.anova(small, large)

    table = inside_a_function()
    assert list(table.index) == ["small", "large"]
    assert table["npar"].dtype.kind == "i" and table["npar"].tolist() == [4, 6]
    fm0, fm1 = fits
    assert list(bm.anova(fm0, fm1).index) == ["fm0", "fm1"]
    assert list(bm.anova(fits[0], fits[1]).index) == ["fits[0]", "fits[1]"]  # lme4 deparses the call
    page = table._repr_html_()
    assert "<div>small: Reaction ~ Days + (1 | Subject)</div>" in page
    assert ">42.139<" in page and ">1802.1<" in page and ">7.07e-10<" in page
    assert ">4<" in page and ">2<" in page  # npar and Df as integers
    capsys.readouterr()


def test_profile_progress_is_a_tqdm_bar_and_silent_when_off(fits, capsys, monkeypatch):
    from bayesmix.inference import profiles

    fm0 = fits[0]
    capsys.readouterr()
    quiet = fm0.profile(which="beta_", progress=False)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(profiles, "PROFILE_BAR_DELAY_S", 0.0)  # this profile is faster than the default delay
    shown = fm0.profile(which="beta_", progress=True)
    err = capsys.readouterr().err
    assert "profile" in err and "2/2" in err  # one step per fixed effect
    pd.testing.assert_frame_equal(pd.DataFrame(quiet), pd.DataFrame(shown))


def test_progress_bar_waits_for_its_delay(capsys):
    from bayesmix.inference._common import Progress

    with Progress(3, True, "fast work", delay=60.0) as bar:
        bar.update(3)
    assert capsys.readouterr().err == ""  # done before the delay: nothing printed
    with Progress(3, True, "shown", delay=0.0) as bar:
        bar.update(3)
    assert "shown" in capsys.readouterr().err


# --- plots: legible on a projector, each on its own scale, into the caller's axes -------------------


def _text_sizes(fig):
    import matplotlib.text

    return [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text().strip() and t.get_visible()]


@pytest.fixture(scope="module")
def slope_posterior(fits):
    pytest.importorskip("matplotlib").use("Agg")
    return fits[1].sample(draws=100, tune=100, chains=2, random_seed=1, progressbar=False)


def test_forest_gives_each_parameter_its_own_axis(fits, slope_posterior):
    import matplotlib.pyplot as plt

    m = fits[1]
    fig = bm.plots.forest(m, slope_posterior)
    assert len(fig.axes) == 6  # 2 fixed effects, 2 SDs, σ, 1 correlation
    intercept_ax, days_ax = fig.axes[0], fig.axes[1]
    assert [t.get_text() for t in intercept_ax.get_yticklabels()] == ["(Intercept)"]
    # the slope's Wald interval (10.47 ± 1.96·1.546) spans most of its own axis, not a dot beside 251
    lo, hi = days_ax.get_xlim()
    assert lo > 5 and hi < 16 and (2 * 1.96 * 1.546) / (hi - lo) > 0.5
    assert intercept_ax.get_xlim()[0] > 200
    assert min(_text_sizes(fig)) >= 10
    assert fig.legends and not any(ax.get_legend() for ax in fig.axes)  # the legend off the data
    _, axes = plt.subplots(6, 1)
    assert bm.plots.forest(m, slope_posterior, ax=axes) is axes[0].figure
    with pytest.raises(bm.ArgumentError, match="needs 6 axes, got 2"):
        bm.plots.forest(m, slope_posterior, ax=axes[:2])
    plt.close("all")


def test_caterpillar_and_profile_plots_are_legible_and_take_axes(fits, slope_posterior):
    import matplotlib.pyplot as plt

    m = fits[1]
    fig = bm.plots.caterpillar(m, slope_posterior)
    assert min(_text_sizes(fig)) >= 10
    assert fig.legends and not any(ax.get_legend() for ax in fig.axes)
    own, axes = plt.subplots(1, 2)
    assert bm.plots.caterpillar(m, slope_posterior, ax=axes) is own
    prof = fits[0].profile(progress=False)
    pfig = prof.plot()
    assert min(_text_sizes(pfig)) >= 10
    own, axes = plt.subplots(2, 2)
    assert prof.plot(ax=axes) is own
    plt.close("all")


def test_random_effect_draws_bar_is_tqdm_off_or_delayed(capsys):
    # the bar over the draws of b that follow nutpie's own bar (blocked and per-draw routes; the
    # blocked route runs through it in test_blockedlmm.py)
    from bayesmix.bayes.sampling import _effects_bar

    with _effects_bar(5, False) as off:
        assert off.disable
    with _effects_bar(5, True) as quick:
        assert not quick.disable and quick.delay == 1.0
        quick.update(5)  # done well within the 1 s delay
    assert capsys.readouterr().err == ""
