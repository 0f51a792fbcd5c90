"""Property-style robustness: hostile data frames give a clean bayesmix error or a finite fit.

hypothesis draws small data frames whose columns hold NaN, ±inf, huge values, numbers
stored as objects, strings, mixed objects, complex numbers, constant responses and
missing grouping values. Whatever comes in, lmer/glmer/predict must either raise a
``BayesmixError`` subclass (naming the problem) or return finite estimates: never a
numpy/pandas/scipy exception, never a NaN result. Examples are few and small so the file
runs in seconds.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bayesmix as bm
from bayesmix.errors import BayesmixError

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -1.0, 1e300, -1e-300]


@st.composite
def numeric_column(draw, n: int, counts: bool = False):
    """Ordinary values with a few special ones dropped in."""
    base = draw(st.lists(st.integers(0, 40) if counts else st.floats(-50, 50, allow_nan=False),
                         min_size=n, max_size=n))
    values = np.asarray(base, dtype=float)
    for _ in range(draw(st.integers(0, 2))):
        values[draw(st.integers(0, n - 1))] = draw(st.sampled_from(_SPECIAL))
    if draw(st.integers(0, 9)) == 0:
        values[:] = values[0]  # a constant column
    return values


@st.composite
def odd_dtype(draw, values: np.ndarray):
    """The same numbers stored in one of the ways data frames hold them."""
    kind = draw(st.sampled_from(["float", "object", "string", "mixed", "complex", "int-like"]))
    if kind == "object":
        return pd.Series(list(values), dtype=object)
    if kind == "string":
        return pd.Series([str(v) for v in values], dtype=object)
    if kind == "mixed":
        out = pd.Series(list(values), dtype=object)
        out[0] = "a"
        return out
    if kind == "complex":
        return pd.Series(values + 0j)
    if kind == "int-like":
        return pd.Series(np.where(np.isfinite(values), np.round(values), values))
    return pd.Series(values)


@st.composite
def frames(draw, counts: bool = False):
    n = draw(st.integers(8, 24))
    y = draw(numeric_column(n, counts))
    x = draw(odd_dtype(draw(numeric_column(n))))
    levels = draw(st.integers(2, 4))
    g = pd.Series([f"g{i % levels}" for i in range(n)], dtype=object)
    if draw(st.booleans()):
        g[draw(st.integers(0, n - 1))] = None
    return pd.DataFrame({"y": y, "x": x, "g": g})


def _finite_fit(m) -> None:
    for name, values in [("criterion", m.criterion_value), ("fixef", m.fixef), ("theta", m.theta),
                         ("sigma", m.sigma), ("fitted", m.fitted())]:
        assert np.all(np.isfinite(np.asarray(values, dtype=float))), f"{name} not finite: {values}"


def _fit_or_clean_error(fit) -> object | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.errors.BayesmixWarning)
        warnings.simplefilter("ignore", FutureWarning)
        try:
            m = fit()
        except BayesmixError:
            return None
    _finite_fit(m)
    return m


@SETTINGS
@given(frames())
def test_lmer_on_hostile_frames(data):
    m = _fit_or_clean_error(lambda: bm.lmer("y ~ x + (1 | g)", data))
    if m is not None:
        assert m.nobs <= len(data)


@SETTINGS
@given(frames())
def test_lmer_with_a_transform_on_hostile_frames(data):
    _fit_or_clean_error(lambda: bm.lmer("y ~ log(x) + (1 | g)", data))


@SETTINGS
@given(frames(counts=True))
def test_poisson_glmer_on_hostile_frames(data):
    _fit_or_clean_error(lambda: bm.glmer("y ~ x + (1 | g)", data, family="poisson"))


@SETTINGS
@given(frames(counts=True))
def test_binomial_glmer_on_hostile_frames(data):
    y = data["y"].to_numpy()
    data["y"] = np.where(np.isfinite(y), (y > 20).astype(float), y)  # 0/1, specials kept
    _fit_or_clean_error(lambda: bm.glmer("y ~ x + (1 | g)", data, family="binomial"))


@SETTINGS
@given(frames(counts=True), st.sampled_from([None, np.ones, np.zeros, lambda n: np.r_[np.inf, np.ones(n - 1)],
                                             lambda n: np.ones(n + 1), lambda n: np.r_[-1.0, np.ones(n - 1)]]))
def test_weights_and_offsets_on_hostile_frames(data, make):
    extra = None if make is None else make(len(data))
    _fit_or_clean_error(lambda: bm.lmer("y ~ 1 + (1 | g)", data, weights=extra))
    _fit_or_clean_error(lambda: bm.glmer("y ~ 1 + (1 | g)", data, family="poisson", offset=extra))


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(4)
    data = pd.DataFrame({"x": rng.normal(size=60), "g": np.repeat([f"g{i}" for i in range(6)], 10)})
    data["y"] = 1 + data["x"] + rng.normal(size=60) + np.repeat(rng.normal(size=6), 10)
    return bm.lmer("y ~ x + (1 | g)", data)


@SETTINGS
@given(frames())
def test_predict_on_hostile_newdata(fitted, newdata):
    try:
        out = fitted.predict(newdata=newdata)
    except BayesmixError:
        return
    assert out.shape == (len(newdata),)
    # a missing covariate gives a NaN prediction for its row (lme4's na.pass), nothing else does
    x = pd.to_numeric(newdata["x"], errors="coerce").to_numpy(dtype=float)
    assert np.array_equal(np.isnan(out), np.isnan(x))
