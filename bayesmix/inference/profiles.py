"""Likelihood profiles and profile confidence intervals, as lme4's ``profile.merMod`` and ``confint.thpr``.

Each parameter — random-effect SDs and correlations, the residual SD, the fixed
effects — is held at a sequence of values while all the others are re-optimized; the
signed root deviance ``ζ = sign(x − x̂) √(dev(x) − dev(x̂))`` is recorded.  The sequence
of values follows lme4's stepping rule (steps of about ``δ = cutoff/8`` in ζ, until
``|ζ|`` passes ``√χ²₀.₉₉(npar)``), a natural interpolating spline of ζ against the
parameter is inverted (``splines::backSpline``), and the interval ends are where ζ
equals the normal quantiles.  LMMs are profiled on the ML deviance (REML fits are
refitted by ML first, as lme4 does); GLMMs on the Laplace (or AGQ) deviance.

When to trust it: profile intervals do not assume a symmetric (quadratic) likelihood,
so they are much better than Wald intervals for variance parameters, whose likelihood
is skewed; they are still asymptotic (the χ² calibration of the deviance).  A profile
reaching the boundary (an SD at 0, a correlation at ±1) gives that boundary as the
interval end.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.interpolate import CubicSpline
from scipy.optimize import minimize
from scipy.stats import chi2, norm

from bayesmix.engine import deviance
from bayesmix.engine.scalar_laplace import ScalarLaplace
from bayesmix.errors import BayesmixWarning, warn
from bayesmix.inference._common import (
    InferenceError,
    Progress,
    is_lmm,
    percent_labels,
    refit_ml,
)
from bayesmix.results.varcorr import sdcor_from_theta, sdcor_names

_MAXPTS = 100
PROFILE_BAR_DELAY_S = 1.0  # most profiles take well under a second: no bar for those
_MAXMULT = 10.0
_DEVTOL = 1e-9


# --- parametrizations: θ <-> (sd, cor), lme4's Cv_to_Sv / Sv_to_Cv --------------------------


def theta_from_sdcor(terms, sdcor: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The relative Cholesky factors (θ) for given SDs and correlations, relative to ``scale``."""
    out, start = [], 0
    for term in terms:
        v = sdcor[start : start + term.ntheta]
        start += term.ntheta
        if term.k == 1:
            out.append(abs(v[0]) / scale)
        elif term.k == 2:  # closed form of the 2 x 2 Cholesky factor: (sd1, cor, sd2) -> (L11, L21, L22)
            sd1, cor, sd2 = abs(v[0]), v[1], abs(v[2])
            out.extend((sd1 / scale, cor * sd2 / scale if sd1 > 0 else 0.0,
                        sd2 * math.sqrt(max(1.0 - cor * cor, 0.0)) / scale if sd1 > 0 else sd2 / scale))
        else:
            rows, cols = term.theta_rows_cols
            sd = np.abs(v[rows == cols])
            cor = np.eye(term.k)
            cor[rows[rows != cols], cols[rows != cols]] = v[rows != cols]
            cor = np.tril(cor) + np.tril(cor, -1).T
            L = _semidefinite_cholesky(cor * np.outer(sd, sd) / scale**2)
            out.extend(L[rows, cols])
    return np.array(out, dtype=float)


def _semidefinite_cholesky(S: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor that tolerates singular (semidefinite) matrices: zero pivots give zero columns."""
    k = S.shape[0]
    L = np.zeros_like(S)
    for j in range(k):
        d = S[j, j] - L[j, :j] @ L[j, :j]
        L[j, j] = math.sqrt(max(d, 0.0))
        for i in range(j + 1, k):
            L[i, j] = (S[i, j] - L[i, :j] @ L[j, :j]) / L[j, j] if L[j, j] > 1e-12 else 0.0
    return L


# --- deviance functions over the profiling parameters ---------------------------------------------


class _LmmProfiler:
    """lme4's ``devfun2`` for an LMM: ML deviance as a function of (SDs/cors, σ), β profiled out."""

    def __init__(self, ml_fit):
        self.fit = ml_fit
        self.terms = ml_fit.compiled.terms
        self.dev = ml_fit.profiled_deviance
        self.n = self.dev.n
        self.log_w = self.dev.cross.sum_log_weights
        self.nvp = ml_fit.compiled.ntheta + 1
        self.p = ml_fit.compiled.p

    def varpar_deviance(self, vp: np.ndarray) -> float:
        s = vp[-1]
        if not s > 0:
            return np.inf
        f = self.dev.factorize(theta_from_sdcor(self.terms, vp[:-1], s))
        if f is None:
            return np.inf
        return deviance.at_sigma(f, self.n, 0, s, False, self.log_w)

    def beta_at(self, vp: np.ndarray) -> np.ndarray:
        f = self.dev.factorize(theta_from_sdcor(self.terms, vp[:-1], vp[-1]))
        return self.dev.solve(f)[0]

    def fixed_effect_deviance(self, j: int):
        """The ML profiled deviance in θ with β_j held at a value (its column moved to the offset)."""
        cp = self.dev.cross
        keep = [i for i in range(self.p) if i != j]

        def at(value):
            from bayesmix.engine.lmm import CrossProducts, ProfiledDeviance

            # [X_keep, y - value x_j] = [X, y] M: transform the stored cross-products, not the data
            M = np.zeros((self.p + 1, self.p))
            M[keep, np.arange(self.p - 1)] = 1.0
            M[self.p, self.p - 1] = 1.0
            M[j, self.p - 1] = -value
            cross = CrossProducts(
                cp.a11, np.ascontiguousarray(np.einsum("ab,alk->blk", M, cp.a_x1)), cp.a_r1, cp.a_rr,
                M.T @ cp.a_xr, M.T @ cp.a_xx @ M, cp.n, cp.sum_log_weights)
            return ProfiledDeviance(self.terms, np.zeros((self.n, self.p - 1)), None, None, reml=False, cross=cross)

        return at


class _GlmmProfiler:
    """lme4's ``devfun2`` for a GLMM: the Laplace/AGQ deviance as a function of (SDs/cors, β)."""

    def __init__(self, fit):
        self.fit = fit
        self.terms = fit.compiled.terms
        self.ntheta = fit.compiled.ntheta
        # Laplace with one scalar term: a vectorized PIRLS; otherwise (AGQ, vector terms) the engine's objective
        self.fast = ScalarLaplace(fit.compiled, fit.family) if ScalarLaplace.applies(fit) else None
        self.objective = fit.glmm_fit.objective

    def deviance(self, par: np.ndarray) -> float:
        theta = theta_from_sdcor(self.terms, par[: self.ntheta])
        beta = par[self.ntheta :]
        if self.fast is not None:
            return self.fast(theta, beta)
        return self.objective.theta_beta(np.concatenate([theta, beta]))


# --- the profile ----------------------------------------------------------------------------


class Profile(pd.DataFrame):
    """lme4's ``thpr`` in long form: per profiled parameter, the points (value, ζ) and all parameters there."""

    _metadata = ["bounds"]

    @property
    def _constructor(self):
        return Profile

    def confint(self, level: float = 0.95, parm=None) -> pd.DataFrame:
        """Profile confidence intervals (lme4's ``confint.thpr``) from the spline through this profile."""
        return profile_confint(self, level=level, parm=parm)

    def plot(self, **kwargs):
        """ζ against each parameter (lme4's ``xyplot(thpr)``), one panel per parameter."""
        from bayesmix.inference.profile_plot import plot_profile

        return plot_profile(self, **kwargs)


def profile(model, which=None, alphamax: float = 0.01, delta_cutoff: float = 1 / 8, progress: bool = True) -> Profile:
    """lme4's ``profile(m)``: the signed root deviance of each parameter, the others re-optimized.

    ``which``: parameter names (``sd_...``, ``cor_...``, ``sigma``, fixed-effect names),
    ``"theta_"`` (all variance parameters), ``"beta_"`` (all fixed effects), or None for all.
    ``progress``: a tqdm bar, one step per parameter (``False``: silent).
    """
    from bayesmix.engine.threads import blas_threads_for, dense_dimension

    _check_profile_supported(model)
    fit = refit_ml(model)
    with blas_threads_for(dense_dimension(fit.compiled)):
        if is_lmm(fit):
            return _profile_lmm(fit, which, alphamax, delta_cutoff, progress)
        return _profile_glmm(fit, which, alphamax, delta_cutoff, progress)


def _check_profile_supported(model) -> None:
    if not is_lmm(model) and model.nAGQ == 0:
        raise InferenceError("profile intervals need the Laplace or AGQ deviance in (θ, β); an nAGQ = 0 fit optimizes "
                             "θ only (β from PIRLS). Refit with nAGQ=1 to profile, or use confint(method='boot')")
    if not is_lmm(model) and model.has_scale:
        raise InferenceError(f"profile intervals are not available for GLMMs with an estimated scale "
                             f"({model.family_name} family), as in lme4; use confint(method='boot')")


def _select(which, names: list[str], nvp: int) -> list[int]:
    """lme4's ``get.which``: indices of the parameters to profile."""
    if which is None:
        return list(range(len(names)))
    if isinstance(which, str):
        which = [which]
    chosen: set[int] = set()
    for w in which:
        if isinstance(w, (int, np.integer)):
            chosen.add(int(w))
        elif w == "theta_":
            chosen.update(range(nvp))
        elif w == "beta_":
            chosen.update(range(nvp, len(names)))
        elif w in names:
            chosen.add(names.index(w))
        else:
            raise InferenceError(f"unknown parameter {w!r}; parameters are {names} (or 'theta_', 'beta_')")
    return sorted(chosen)


class _Stepper:
    """lme4's ``nextpar``/``fillmat``: walk from the optimum until |ζ| passes the cutoff or a bound is hit."""

    def __init__(self, cutoff: float, delta: float):
        self.cutoff = cutoff
        self.delta = delta

    def next_value(self, prev, cur, lower, upper) -> float:
        (p0, z0), (p1, z1) = prev, cur
        num, denom = p1 - p0, z1 - z0
        if not np.isfinite(denom) or denom == 0:
            step = 1e-6
        else:
            step = self.delta * num / denom
            if step < 0:
                step = 1e-6
            elif abs(step) > _MAXMULT * abs(num):
                step = math.copysign(_MAXMULT * abs(num), step)
        return min(upper, max(lower, p1 + math.copysign(1.0, num) * step))

    def walk(self, first_two: list, zeta_at, lower: float, upper: float) -> list:
        """Rows after the first two; each row is (value, zeta, params)."""
        rows = list(first_two)
        while len(rows) < _MAXPTS:
            value, zeta, _ = rows[-1]
            if not (lower < value < upper) or not (np.isnan(zeta) or abs(zeta) <= self.cutoff):
                break
            nxt = self.next_value(rows[-2][:2], rows[-1][:2], lower, upper)
            rows.append(zeta_at(nxt, rows))
        return rows[2:]


def _optimize(fun, x0, lower, upper):
    """Bounded quasi-Newton minimization of the other parameters (lme4 uses BOBYQA here).

    Variables are scaled by their starting magnitudes; gradients are forward differences,
    stepping inwards at an upper bound.  The tolerance keeps the deviance to ~1e-9
    relative, far below what moves the interval ends.
    """
    x0 = np.clip(np.asarray(x0, dtype=float), lower, upper)
    if x0.size == 0:
        return x0, float(fun(x0))
    scale = np.maximum(np.abs(x0), 1e-2)
    lo, hi = lower / scale, upper / scale

    def value_and_gradient(y):
        f0 = fun(y * scale)
        g = np.empty_like(y)
        for i in range(len(y)):
            h = 1e-7 * max(abs(y[i]), 1e-2)
            if y[i] + h > hi[i]:
                h = -h
            yh = y.copy()
            yh[i] += h
            g[i] = (fun(yh * scale) - f0) / h
        return f0, g

    bounds = [(a if np.isfinite(a) else None, b if np.isfinite(b) else None) for a, b in zip(lo, hi)]
    res = minimize(value_and_gradient, x0 / scale, jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"ftol": 1e-11, "gtol": 1e-7, "maxiter": 500, "maxls": 40})
    return np.asarray(res.x, dtype=float) * scale, float(res.fun)


def _extrapolated_start(value: float, previous: list) -> np.ndarray:
    """Start the next optimization on the line through the last two profile points (their optima move smoothly)."""
    (v1, _, full1), (v2, _, full2) = previous[-2], previous[-1]
    if v2 == v1 or not np.all(np.isfinite(full1)) or not np.all(np.isfinite(full2)):
        return full2
    return full2 + (full2 - full1) * (value - v2) / (v2 - v1)


def _profile_parameter(w: int, opt: np.ndarray, lower: np.ndarray, upper: np.ndarray, npar1: int, dev,
                       base: float, stepper: _Stepper, extra=None) -> list:
    """lme4's ``FUN(w)`` for a parameter profiled with the other ``npar1`` - 1 parameters re-optimized."""
    others = np.array([i for i in range(npar1) if i != w])
    pw = opt[w]

    def zeta_at(value, previous):
        start = _extrapolated_start(value, previous) if len(previous) > 1 else previous[-1][2]

        def objective(x):
            par = np.empty(npar1)
            par[w] = value
            par[others] = x
            return dev(par)

        x, fval = _optimize(objective, start[others], lower[others], upper[others])
        diff = fval - base
        if diff < -_DEVTOL * max(1.0, abs(base)):
            raise InferenceError(f"profiling detected a new, lower deviance ({fval:.6f} < {base:.6f}) at "
                                 f"{value!r}: the fit had not converged; refit and profile again")
        par = np.empty(npar1)
        par[w] = value
        par[others] = x
        full = np.concatenate([par, extra(par)]) if extra is not None else par
        return value, math.copysign(math.sqrt(max(diff, 0.0)), value - pw), full

    center = (pw, 0.0, np.concatenate([opt, extra(opt)]) if extra is not None else opt.copy())
    shifted = zeta_at(0.001 if pw == 0 else pw * 1.01, [center])
    rows = [center, shifted]
    rows += stepper.walk([center, shifted], zeta_at, lower[w], upper[w])
    if pw > lower[w]:
        rows += stepper.walk([shifted, center], zeta_at, lower[w], upper[w])
    return rows


def _profile_lmm(fit, which, alphamax, delta_cutoff, progress: bool = False) -> Profile:
    prof = _LmmProfiler(fit)
    sigma_ml = np.sqrt(fit.factorization.pwrss / prof.n)
    vp_opt = np.concatenate([sdcor_from_theta(prof.terms, fit.theta_values, sigma_ml), [sigma_ml]])
    beta_opt = fit.beta_values
    opt = np.concatenate([vp_opt, beta_opt])
    names = sdcor_names(fit.compiled.terms, fit.has_scale) + list(fit.compiled.fixef_names)
    nvp = prof.nvp
    base = fit.criterion_value
    if abs(prof.varpar_deviance(vp_opt) - base) > 1e-5 * max(1.0, abs(base)):
        raise InferenceError("internal inconsistency: the deviance in (SD, cor, sigma) does not match the ML fit")
    lower, upper = _bounds(fit, with_scale=True)
    cutoff = math.sqrt(chi2.ppf(1 - alphamax, len(opt)))
    stepper = _Stepper(cutoff, cutoff * delta_cutoff)
    chosen = _select(which, names, nvp)
    records = []
    with Progress(len(chosen), progress, "profile", delay=PROFILE_BAR_DELAY_S) as bar:
        for w in chosen:
            bar.set_postfix_str(names[w])
            if w < nvp:
                rows = _profile_parameter(w, vp_opt, lower, upper, nvp, prof.varpar_deviance, base, stepper,
                                          extra=prof.beta_at)
            else:
                rows = _profile_fixed_effect(prof, fit, w - nvp, opt, base, stepper)
            records.append((names[w], rows))
            bar.update()
    bounds = {n: (lower[i], upper[i]) if i < nvp else (np.nan, np.nan) for i, n in enumerate(names)}
    return _as_profile(records, names, bounds)


def _profile_fixed_effect(prof: _LmmProfiler, fit, j: int, opt: np.ndarray, base: float, stepper: _Stepper) -> list:
    """lme4's fixed-effect profile for an LMM: β_j moved into the offset, θ re-optimized from the ML θ."""
    est = fit.beta_values[j]
    se = float(np.sqrt(fit.vcov_values[j, j]))
    deviance_at = prof.fixed_effect_deviance(j)
    theta_lower = fit.compiled.theta_lower()
    theta_opt = fit.theta_values
    nvp = prof.nvp

    def theta_of(row):
        full = row[2]
        return theta_from_sdcor(prof.terms, full[: nvp - 1], full[nvp - 1])

    def zeta_at(value, previous):
        # lme4 restarts from the ML θ; starting on the line through the last two optima reaches the same optimum faster
        start = theta_opt if previous is None else _extrapolated_start(
            value, [(r[0], r[1], theta_of(r)) for r in previous[-2:]])
        dev = deviance_at(value)
        theta, fval = _optimize(dev, start, theta_lower, np.full_like(theta_lower, np.inf))
        f = dev.factorize(theta)
        beta_rest, _ = dev.solve(f)
        sig = math.sqrt(f.pwrss / prof.n)
        beta = np.insert(beta_rest, j, value)
        full = np.concatenate([sdcor_from_theta(prof.terms, theta, sig), [sig], beta])
        return value, math.copysign(math.sqrt(max(fval - base, 0.0)), value - est), full

    center = (est, 0.0, opt.copy())
    first = zeta_at(est + stepper.delta * se, None)
    rows = [center, first]
    rows += stepper.walk([center, first], zeta_at, -np.inf, np.inf)
    rows += stepper.walk([first, center], zeta_at, -np.inf, np.inf)
    return rows


def _profile_glmm(fit, which, alphamax, delta_cutoff, progress: bool = False) -> Profile:
    prof = _GlmmProfiler(fit)
    sd_opt = sdcor_from_theta(prof.terms, fit.theta_values)
    opt = np.concatenate([sd_opt, fit.beta_values])
    names = sdcor_names(fit.compiled.terms, fit.has_scale) + list(fit.compiled.fixef_names)
    base = fit.criterion_value
    check = prof.deviance(opt)
    if abs(check - base) > 1e-5 * max(1.0, abs(base)):
        raise InferenceError(f"internal inconsistency: the profiling deviance ({check}) does not match the fit ({base})")
    lower, upper = _bounds(fit, with_scale=False)
    lower = np.concatenate([lower, np.full(fit.compiled.p, -np.inf)])
    upper = np.concatenate([upper, np.full(fit.compiled.p, np.inf)])
    cutoff = math.sqrt(chi2.ppf(1 - alphamax, len(opt)))
    stepper = _Stepper(cutoff, cutoff * delta_cutoff)
    records = []
    chosen = _select(which, names, len(sd_opt))
    with Progress(len(chosen), progress, "profile", delay=PROFILE_BAR_DELAY_S) as bar:
        for w in chosen:
            bar.set_postfix_str(names[w])
            rows = _profile_parameter(w, opt, lower, upper, len(opt), prof.deviance, base, stepper)
            records.append((names[w], rows))
            bar.update()
    bounds = {n: (lower[i], upper[i]) for i, n in enumerate(names)}
    return _as_profile(records, names, bounds)


def _bounds(fit, with_scale: bool) -> tuple[np.ndarray, np.ndarray]:
    """lme4: SDs in [0, ∞), correlations in [-1, 1], σ in [0, ∞)."""
    theta_lower = fit.compiled.theta_lower()
    lower = np.maximum(theta_lower, -1.0)
    upper = np.where(theta_lower == 0, np.inf, 1.0)
    if with_scale:
        lower, upper = np.append(lower, 0.0), np.append(upper, np.inf)
    return lower, upper


def _as_profile(records, names, bounds) -> Profile:
    frames = []
    for name, rows in records:
        values = np.array([r[0] for r in rows])
        order = np.argsort(values, kind="stable")
        block = pd.DataFrame([rows[i][2] for i in order], columns=names)
        block.insert(0, "zeta", [rows[i][1] for i in order])
        block.insert(0, "value", values[order])
        block.insert(0, "parameter", name)
        frames.append(block.drop_duplicates(subset=["value", "zeta"]))
    out = Profile(pd.concat(frames, ignore_index=True))
    out.bounds = bounds
    return out


# --- splines and intervals ---------------------------------------------------------------------


def _back_spline(x: np.ndarray, zeta: np.ndarray):
    """splines::backSpline of the natural interpolating spline ``zeta(x)``: knots in ζ, coefficients of x(ζ)."""
    spline = CubicSpline(x, zeta, bc_type="natural")
    slope = spline(x, 1)
    nk = len(x)
    kdiff = np.diff(x)
    adiff = np.diff(zeta)
    if np.all(adiff < 0):
        reverse = True
    elif np.all(adiff > 0):
        reverse = False
    else:
        raise ValueError("spline must be monotone")
    b = np.full((nk, 4), np.nan)
    b[:, 0] = x
    b[:, 1] = 1.0 / slope
    for i in range(nk - 1):
        a = np.array([[adiff[i] ** 2, adiff[i] ** 3], [2 * adiff[i], 3 * adiff[i] ** 2]])
        rhs = np.array([kdiff[i] - adiff[i] * b[i, 1], b[i + 1, 1] - b[i, 1]])
        b[i, 2:4] = np.linalg.solve(a, rhs)
    b[nk - 1, 1:4] = np.nan
    last = nk - 2
    if nk > 2:
        b[0, 3] = b[last, 3] = 0.0
        b[0, 1:3] = np.linalg.solve(np.array([[adiff[0], adiff[0] ** 2], [1.0, 2 * adiff[0]]]),
                                    np.array([kdiff[0], 1.0 / slope[1]]))
        b[last, 2] = (kdiff[last] - adiff[last] * b[last, 1]) / adiff[last] ** 2
    if b[0, 2] > 0:
        b[0, 2] = 0.0
        b[0, 1] = kdiff[0] / adiff[0]
    if b[last, 2] < 0:
        b[last, 2] = 0.0
        b[last, 1] = kdiff[last] / adiff[last]
    knots = zeta.copy()
    if reverse:
        knots, b = knots[::-1], b[::-1]
    return knots, b


def _predict_poly_spline(knots: np.ndarray, coef: np.ndarray, at: np.ndarray) -> np.ndarray:
    """splines' ``predict.polySpline``: NA outside the knots; intervals closed on the right."""
    at = np.atleast_1d(np.asarray(at, dtype=float))
    out = np.full(at.shape, np.nan)
    for k, v in enumerate(at):
        if v < knots[0] or v > knots[-1] or np.isnan(v):
            continue
        i = 0 if v == knots[0] else int(np.searchsorted(knots, v, side="left")) - 1
        d = v - knots[i]
        c = coef[i]
        out[k] = c[0] + d * (c[1] + d * (c[2] + d * c[3]))
    return out


def _interval_ends(part: pd.DataFrame, zeta_levels: np.ndarray, name: str) -> np.ndarray:
    part = part.dropna(subset=["value", "zeta"]).sort_values("value")
    x, z = part["value"].to_numpy(), part["zeta"].to_numpy()
    try:
        if len(x) < 4 or np.any(np.diff(x) <= 0):
            raise ValueError("too few or repeated points")
        knots, coef = _back_spline(x, z)
        return _predict_poly_spline(knots, coef, zeta_levels)
    except (ValueError, np.linalg.LinAlgError):
        if np.any(np.diff(z) < -0.01):
            warn(f"non-monotonic profile for {name}", BayesmixWarning)
            return np.full(len(zeta_levels), np.nan)
        warn(f"bad spline fit for {name}: falling back to linear interpolation", BayesmixWarning)
        return np.interp(zeta_levels, z, x, left=np.nan, right=np.nan)


def profile_confint(prof: Profile, level: float = 0.95, parm=None) -> pd.DataFrame:
    """lme4's ``confint.thpr``: interval ends where the back-spline of the profile reaches the normal quantiles."""
    _check_level(level)
    a = (1 - level) / 2
    zeta_levels = norm.ppf([a, 1 - a])
    names = list(dict.fromkeys(prof["parameter"]))
    if parm is not None:
        wanted = [parm] if isinstance(parm, str) else list(parm)
        unknown = [p for p in wanted if p not in names]
        if unknown:
            raise InferenceError(f"no profile for {unknown}; profiled parameters are {names}")
        names = [n for n in names if n in wanted]
    rows = []
    for name in names:
        ends = _interval_ends(prof[prof["parameter"] == name], zeta_levels, name)
        lo_bound, hi_bound = prof.bounds.get(name, (np.nan, np.nan))
        if np.isnan(ends[0]):
            ends[0] = lo_bound
        if np.isnan(ends[1]):
            ends[1] = hi_bound
        rows.append(ends)
    return pd.DataFrame(rows, index=names, columns=percent_labels(level))


def _check_level(level: float) -> None:
    if not (isinstance(level, (float, int)) and 0 < level < 1):
        raise InferenceError(f"level must be a probability between 0 and 1, got {level!r}")


def wald_confint(model, level: float = 0.95) -> pd.DataFrame:
    """lme4's ``confint(m, method = "Wald")``: β̂ ± z SE; NA for the variance parameters, as lme4 gives."""
    _check_level(level)
    a = (1 - level) / 2
    names = sdcor_names(model.compiled.terms, model.has_scale)
    se = np.sqrt(np.diag(model.vcov_values))
    z = norm.ppf([a, 1 - a])
    fixed = model.beta_values[:, None] + se[:, None] * z[None, :]
    values = np.vstack([np.full((len(names), 2), np.nan), fixed])
    return pd.DataFrame(values, index=names + list(model.compiled.fixef_names), columns=percent_labels(level))


def confint(model, parm=None, level: float = 0.95, method: str = "profile", nsim: int = 500, seed=None,
            boot_type: str = "perc", n_jobs=None, progress: bool = True) -> pd.DataFrame:
    """lme4's ``confint.merMod``: "profile" (default), "Wald" or "boot" (parametric bootstrap) intervals.

    Names as lme4's (``oldNames = FALSE``): ``sd_(Intercept)|Subject``,
    ``cor_Days.(Intercept)|Subject``, ``sigma``, then the fixed effects.

    Which to trust: "profile" for everything (asymptotic, but follows the skewed
    likelihood of variance parameters); "Wald" only for fixed effects (it is NA for
    variance parameters, as in lme4, because a symmetric interval on the SD scale is
    poor); "boot" when the asymptotics are doubtful (few groups) — it costs ``nsim``
    refits.
    """
    _check_level(level)
    key = str(method).lower()
    if key == "wald":
        table = wald_confint(model, level)
    elif key == "profile":
        table = profile(model, which=parm, progress=progress).confint(level)
    elif key == "boot":
        from bayesmix.inference.parametric_bootstrap import bootstrap, sdcor_and_fixef

        boot = bootstrap(model, sdcor_and_fixef, nsim=nsim, seed=seed, n_jobs=n_jobs, progress=progress)
        table = boot.confint(level=level, type=boot_type)
    else:
        raise InferenceError(f"unknown method {method!r}; use 'profile', 'Wald' or 'boot'")
    if parm is not None and key != "profile":
        wanted = [parm] if isinstance(parm, str) else list(parm)
        unknown = [p for p in wanted if p not in table.index]
        if unknown:
            raise InferenceError(f"unknown parameter(s) {unknown}; parameters are {list(table.index)}")
        table = table.loc[wanted]
    return table
