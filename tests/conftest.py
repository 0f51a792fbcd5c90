"""Shared test helpers: lme4 reference cases, one cached fit per case, tolerance checks.

Reference numbers come from R/lme4 (tests/reference/*.json, see tests/reference/SOURCE.md;
extra cases in tests/reference/extra/, made by tests/reference/extra/make_extra.R).
R is never called from the tests.

Tolerances (the team's rules): fixed effects within ``fixef_se`` of lme4's standard
error; standard errors, random-effect SDs and sigma within ``rel`` relative; the
criterion no worse than lme4's.  Numbers derived from those (θ, variances, ranef,
fitted values, residual quantiles) get tolerances propagated from them: see each
helper's comment.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayesmix as bm

REFERENCE_DIR = Path(__file__).parent / "reference"
EXTRA_DIR = REFERENCE_DIR / "extra"

# "criterion no worse than lme4's": ours may exceed lme4's minimum by this much at most.
CRITERION_SLACK = 1e-6


@dataclass(frozen=True)
class Tolerance:
    fixef_se: float  # |Δβ| in units of lme4's SE(β)
    rel: float  # SE(β), random-effect SDs, sigma: relative
    corr: float  # correlations (random effects and fixed effects): absolute


LMM = Tolerance(fixef_se=1e-3, rel=2e-3, corr=2e-3)
GLMM = Tolerance(fixef_se=2e-2, rel=2e-2, corr=2e-2)


# --- reference cases ----------------------------------------------------------------------


def _case_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.json") if p.name != "inference.json")


@lru_cache(maxsize=None)
def load_case(case_id: str) -> dict:
    """One reference case by id, from the corpus or from the extra cases."""
    for path in (REFERENCE_DIR / f"{case_id}.json", EXTRA_DIR / "cases" / f"{case_id}.json"):
        if path.exists():
            return json.loads(path.read_text())
    raise KeyError(f"no reference case {case_id!r}")


def _ids(directory: Path, kind: str) -> list[str]:
    out = []
    for path in _case_files(directory):
        family = json.loads(path.read_text())["family"]
        if (family == "gaussian") == (kind == "lmm"):
            out.append(path.stem)
    return out


def corpus_case_ids(kind: str) -> list[str]:
    """Ids of the shared-corpus cases: kind "lmm" (family gaussian, lmer) or "glmm"."""
    return _ids(REFERENCE_DIR, kind)


def extra_case_ids(kind: str) -> list[str]:
    """Ids of the extra cases made by make_extra.R: kind "lmm" or "glmm"."""
    return _ids(EXTRA_DIR / "cases", kind)


@lru_cache(maxsize=None)
def _extra_dataset(name: str) -> pd.DataFrame:
    """An extra data set with its factors restored as categoricals in R's level order."""
    schema = json.loads((EXTRA_DIR / "data" / f"{name}.schema.json").read_text())
    factors = {c["name"]: c for c in schema["columns"] if c["type"] in ("factor", "ordered")}
    # factor cells are labels: read them as text (empty cells are R's NA)
    frame = pd.read_csv(EXTRA_DIR / "data" / f"{name}.csv", dtype={n: str for n in factors})
    for name_, col in factors.items():
        frame[name_] = pd.Categorical(frame[name_], categories=col["levels"], ordered=col["type"] == "ordered")
    assert len(frame) == schema["nrow"]
    return frame


def extra_dataset(name: str) -> pd.DataFrame:
    return _extra_dataset(name).copy()


def case_data(case: dict) -> pd.DataFrame:
    """The data a case was fitted to (a fresh copy)."""
    if (EXTRA_DIR / "data" / f"{case['dataset']}.csv").exists():
        return extra_dataset(case["dataset"])
    return bm.load_dataset(case["dataset"])


@lru_cache(maxsize=None)
def corpus_laplace_exact() -> dict:
    """lme4's Laplace objective at the corpus estimates with PIRLS converged (make_extra.R)."""
    return json.loads((EXTRA_DIR / "corpus_laplace_exact.json").read_text())


# --- one fit per case per session ---------------------------------------------------------


@dataclass
class CaseFit:
    """A reference case, our fit of it, and the warnings the fit raised."""

    case: dict
    model: object
    warnings: list = field(default_factory=list)

    def warning_texts(self) -> list[str]:
        return [str(w.message) for w in self.warnings]


def fit_case(case: dict):
    """Fit a reference case the way R fitted it (formula, REML, weights, family, nAGQ)."""
    data = case_data(case)
    if case["family"] == "gaussian":
        return bm.lmer(case["formula"], data, REML=case["REML"], weights=case["weights"])
    return bm.glmer(case["formula"], data, family=case["family"], weights=case["weights"], nAGQ=case["nAGQ"])


@lru_cache(maxsize=None)
def cached_fit(case_id: str) -> CaseFit:
    """Each model is fitted once per test session, whichever test asks first."""
    case = load_case(case_id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = fit_case(case)
    return CaseFit(case, model, list(caught))


@pytest.fixture(scope="session", autouse=True)
def single_threaded_blas():
    """One BLAS thread for the test session: the test machines share few cores, and under
    contention OpenBLAS's threads spin (the InstEval fit took 36 s with two threads on a
    loaded 2-core machine, 5.8 s with one).  The numbers do not depend on it."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="session")
def fits():
    """``fits(case_id)`` → CaseFit, cached for the whole session."""
    return cached_fit


# --- generic assertions -------------------------------------------------------------------


def assert_within(actual, expected, bound, what: str, names=None) -> None:
    """|actual − expected| ≤ bound, element by element, naming the worst offender."""
    actual = np.atleast_1d(np.asarray(actual, dtype=float))
    expected = np.atleast_1d(np.asarray(expected, dtype=float))
    bound = np.broadcast_to(np.asarray(bound, dtype=float), expected.shape)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs lme4 {expected.shape}"
    err = np.abs(actual - expected)
    bad = ~(err <= bound)  # NaN counts as a failure
    if bad.any():
        worst = int(np.argmax(np.where(bad, err - np.nan_to_num(bound), -np.inf)))
        label = names[worst] if names is not None else worst
        raise AssertionError(
            f"{what} [{label}]: ours {actual[worst]!r}, lme4 {expected[worst]!r}, "
            f"|diff| {err[worst]:.3g} > allowed {bound[worst]:.3g}"
        )


def assert_criterion_not_worse(ours: float, lme4: float, what: str = "criterion") -> None:
    """Our minimized criterion (−2 log L or REML criterion) is no worse than lme4's."""
    assert ours <= lme4 + CRITERION_SLACK, (
        f"{what}: ours {ours!r} is worse than lme4's {lme4!r} by {ours - lme4:.3g} (allowed {CRITERION_SLACK:g})"
    )


def r_quantiles(values) -> np.ndarray:
    """R's default quantile() (type 7) at 0, .25, .5, .75, 1 (numpy's default is type 7)."""
    return np.quantile(np.asarray(values, dtype=float), [0.0, 0.25, 0.5, 0.75, 1.0])


# --- comparisons with lme4, shared by the lmer and glmer reference tests -------------------


def check_structure(m, case: dict) -> None:
    """Names and counts that must match lme4 exactly."""
    assert list(m.fixef.index) == case["fixef_names"]
    assert list(m.theta.index) == case["theta_names"]
    assert m.nobs == case["nobs"]
    assert m.ngrps == case["ngrps"]
    assert m.df == case["df"]
    assert m.df_resid == case["df_resid"]
    assert m.singular == case["singular"]


def check_fixef(m, case: dict, tol: Tolerance) -> None:
    se = np.asarray(case["se"])
    assert_within(m.fixef.to_numpy(), case["fixef"], tol.fixef_se * se, "fixef", case["fixef_names"])


def check_vcov(m, case: dict, tol: Tolerance) -> None:
    """SEs to ``rel``; every entry of vcov to (2·rel + corr)·se_i·se_j.

    cov_ij = corr_ij·se_i·se_j: with SEs within ``rel`` and correlations within ``corr``,
    |Δcov_ij| ≤ (2·rel·|corr_ij| + corr)·se_i·se_j ≤ (2·rel + corr)·se_i·se_j (the
    diagonal gets 2·rel, a variance's share of the SE tolerance).
    """
    se = np.asarray(case["se"])
    assert_within(m.se.to_numpy(), se, tol.rel * se, "standard error", case["fixef_names"])
    check_vcov_entries(m.vcov.to_numpy(), case["vcov"], se, tol, "vcov entry")


def check_vcov_entries(ours, ref, se, tol: Tolerance, what: str) -> None:
    """Every entry of a covariance matrix to (2·rel + corr)·se_i·se_j, the diagonal to (2·rel + rel²)·se_i²."""
    bound = (2 * tol.rel + tol.corr) * np.outer(se, se)
    np.fill_diagonal(bound, (2 * tol.rel + tol.rel**2) * se**2)  # (1 + rel)² − 1
    assert_within(np.ravel(ours), np.ravel(ref), bound.ravel(), what)


def check_sigma(m, case: dict, tol: Tolerance) -> None:
    assert_within(m.sigma, case["sigma"], tol.rel * case["sigma"], "sigma")


def check_theta(m, case: dict, tol: Tolerance) -> None:
    """θ within (2·rel + corr) of the largest θ of its term.

    θ is the Cholesky factor of a term's covariance divided by sigma: a ratio of SDs
    (each within ``rel``) to sigma (within ``rel``), mixed with correlations (within
    ``corr``).  Entries of a term share its scale, so each gets (2·rel + corr) × the
    largest |θ| of the term; a term estimated at exactly zero must be zero.
    """
    ref = np.asarray(case["theta"], dtype=float)
    bound = np.zeros_like(ref)
    start = 0
    for term in m.compiled.terms:
        part = slice(start, start + term.ntheta)
        bound[part] = (2 * tol.rel + tol.corr) * np.max(np.abs(ref[part]))
        start += term.ntheta
    assert_within(m.theta.to_numpy(), ref, bound, "theta", case["theta_names"])


def check_varcorr(m, case: dict, tol: Tolerance) -> None:
    """lme4's as.data.frame(VarCorr): SDs to ``rel``, correlations to ``corr`` absolute,
    variances to 2·rel (+ rel²) relative, covariances to (2·rel + corr)·sd_i·sd_j."""
    ours = m.varcorr
    ref = pd.DataFrame(case["varcorr"])
    key = ["grp", "var1", "var2"]
    assert ours[key].values.tolist() == ref[key].values.tolist()
    is_corr = (ref["var2"] != "").to_numpy()
    sd_ref = ref["sdcor"].to_numpy(dtype=float)
    labels = [f"{g} {a} {b}".strip() for g, a, b in ref[key].values]
    sd_bound = np.where(is_corr, tol.corr, tol.rel * np.abs(sd_ref))
    assert_within(ours["sdcor"].to_numpy(), sd_ref, sd_bound, "VarCorr sdcor", labels)
    # variances and covariances: the SDs of each row's pair
    sd_of = {(g, a): s for g, a, b, s in ref[key + ["sdcor"]].values if b == ""}
    pair_sd = np.array([sd_of[(g, a)] * sd_of[(g, b if b else a)] for g, a, b in ref[key].values])
    v_bound = np.where(is_corr, 2 * tol.rel + tol.corr, 2 * tol.rel + tol.rel**2) * pair_sd
    assert_within(ours["vcov"].to_numpy(), ref["vcov"].to_numpy(dtype=float), v_bound, "VarCorr vcov", labels)


def _sd_by_term(m, case: dict) -> list[np.ndarray]:
    """lme4's SD of each column of each random-effects term (our term order = lme4's)."""
    sd_of = {(r["grp"], r["var1"]): r["sdcor"] for r in case["varcorr"] if r["var2"] == "" and r["grp"] != "Residual"}
    return [np.array([sd_of[(label, col)] for col in term.column_names])
            for label, term in zip(m.group_labels(), m.compiled.terms)]


def ranef_bound(b_ref, sd, tol: Tolerance):
    """Tolerance for a conditional mode: 4·rel·(|b| + SD).

    A conditional mode is the residual mean of its level shrunk by a factor that depends
    on the variance ratio σ_b²/σ² (an LMM: σ_b²/(σ_b² + σ²/n_j)); with each SD within
    ``rel`` the ratio is within 4·rel, and so is the shrinkage factor relative to itself.
    The floor 4·rel·SD covers modes near zero and the fixed-effect error the modes absorb
    (fixef_se·SE(β), below 4·rel·SD for every reference case).
    """
    return 4 * tol.rel * (np.abs(b_ref) + sd)


def check_ranef(m, case: dict, tol: Tolerance) -> None:
    ref_all = case["ranef"]
    assert set(m.ranef) == set(ref_all)
    sds = {}
    for label, term, sd in zip(m.group_labels(), m.compiled.terms, _sd_by_term(m, case)):
        sds.setdefault(term.group, {}).update(dict(zip(term.column_names, sd)))
    for group, levels in ref_all.items():
        ref = pd.DataFrame(levels).T
        ours = m.ranef[group]
        assert list(ours.index) == list(ref.index), f"ranef {group}: levels differ from lme4's order"
        assert list(ours.columns) == list(ref.columns)
        sd = np.array([sds[group][c] for c in ref.columns])
        b_ref = ref.to_numpy(dtype=float)
        names = [f"{group} {lvl} {col}" for lvl in ref.index for col in ref.columns]
        assert_within(ours.to_numpy().ravel(), b_ref.ravel(), ranef_bound(b_ref, sd[None, :], tol).ravel(),
                      "conditional mode", names)


def eta_bound(m, case: dict, tol: Tolerance) -> np.ndarray:
    """Per-row tolerance for the linear predictor η = Xβ + Zb (+ offset).

    Propagated from the parts: Σ_k |X_ik|·fixef_se·SE_k for the fixed effects, plus
    Σ |Z_ic|·ranef_bound(b_ic, SD_c) over the row's random effects (our b standing in
    for lme4's, which the reference omits for its largest cases).
    """
    se = np.asarray(case["se"], dtype=float)
    bound = tol.fixef_se * (np.abs(m.compiled.X) @ se)
    blocks = m.ranef
    for term, sd in zip(m.compiled.terms, _sd_by_term(m, case)):
        b = blocks[term.group][list(term.column_names)].to_numpy()[term.factor.codes]
        bound = bound + np.sum(np.abs(term.columns) * ranef_bound(b, sd[None, :], tol), axis=1)
    return bound


def check_fitted_head(m, case: dict, tol: Tolerance, linkfun=lambda mu: mu) -> None:
    """lme4's first ten fitted values, compared on the link scale within eta_bound."""
    ref = np.asarray(case["fitted_head"], dtype=float)
    n = len(ref)
    assert_within(linkfun(m.fitted()[:n]), linkfun(ref), eta_bound(m, case, tol)[:n], "fitted value (link scale)")


def check_scaled_residual_quantiles(m, case: dict, tol: Tolerance, residual_of_eta) -> None:
    """min, Q1, median, Q3, max of the scaled Pearson residuals.

    Each residual moves by at most |∂r/∂η|·eta_bound plus rel·|r| when it is divided by an
    estimated sigma; an order statistic (and R's interpolated quantile) moves by at most
    the largest of those per-residual bounds.
    """
    eta = m.linear_predictor()
    h = 1e-6 * np.maximum(1.0, np.abs(eta))
    slope = np.abs(residual_of_eta(eta + h) - residual_of_eta(eta - h)) / (2 * h)
    r = residual_of_eta(eta)
    per_residual = slope * eta_bound(m, case, tol) + (tol.rel * np.abs(r) if m.has_scale else 0.0)
    ours = r_quantiles(m.scaled_residuals)
    assert_within(ours, case["scaled_resid_quantiles"], np.max(per_residual), "scaled residual quantile",
                  ["min", "1Q", "median", "3Q", "max"])


def check_statistics_follow_criterion(m, case: dict) -> None:
    """logLik, AIC, BIC (and the ML deviance) shift exactly as the criterion does.

    With df and nobs equal to lme4's, each is the criterion plus the same constant as
    lme4's, so ours − lme4's must equal the criterion's difference (to rounding).
    """
    shift = m.criterion_value - case["minus2loglik"]
    scale = 1e-10 * abs(case["minus2loglik"]) + 1e-9
    assert abs((m.loglik - case["loglik"]) + shift / 2) <= scale
    assert abs((m.aic - case["aic"]) - shift) <= scale
    assert abs((m.bic - case["bic"]) - shift) <= scale


def small_poisson_glmm():
    """A scalar-term Poisson GLMM on 12 simulated groups of 5 (seed 8): the quadrature-collapsed route's test
    case; returns the fit and the generator, which goes on where the data left it."""
    rng = np.random.default_rng(8)
    group = np.repeat(np.arange(12), 5)
    x = rng.normal(size=group.size)
    y = rng.poisson(np.exp(0.3 + 0.5 * x + 0.6 * rng.normal(size=12)[group]))
    data = pd.DataFrame({"y": y, "x": x, "g": pd.Categorical([f"g{i}" for i in group])})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bm.glmer("y ~ x + (1 | g)", data, family="poisson"), rng
