"""Parametric bootstrap: simulate responses from a fit, refit fast, lme4's ``bootMer`` and pbkrtest's ``PBmodcomp``.

Responses are all simulated in the calling process from one seeded generator, so the
results do not depend on how many worker processes refit them.  Refits of an LMM reuse
the data's cross-products (only the response's change) and start from the fitted θ.

When to trust it: the parametric bootstrap assumes the fitted model (for ``pb_test``, the
null model) is the data-generating process.  It is the safest of the tests here for
small samples and for variance components on the boundary, at the price of ``nsim``
refits; its p-values have Monte-Carlo error of about √(p(1−p)/nsim).
"""

from __future__ import annotations

import os
import pickle
import time
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import chi2, norm

from bayesmix.engine.fit import fit_lmm
from bayesmix.engine.glmm import fit_glmm
from bayesmix.engine.lmm import CrossProducts, ProfiledDeviance
from bayesmix.engine.threads import dense_dimension
from bayesmix.errors import BayesmixWarning, warn
from bayesmix.inference._common import (
    InferenceError,
    Progress,
    check_model_objects,
    check_nested,
    check_same_data,
    is_lmm,
    percent_labels,
    refit_ml,
)
from bayesmix.results.builder import build_glmer, build_lmer
from bayesmix.results.varcorr import sdcor_from_theta, sdcor_names
from bayesmix.rformat import print_coefmat
from bayesmix.spec.terms import b_from_u, z_times

# --- simulation -------------------------------------------------------------------------------


def simulate(model, nsim: int = 1, seed=None) -> pd.DataFrame:
    """lme4's ``simulate(m, nsim, seed, use.u = FALSE)``: new responses from the fitted model.

    New random effects are drawn (not the fitted ones), then the response given them.
    Columns ``sim_1`` ... ``sim_nsim``, on the scale of the model's response (a binomial
    ``cbind`` response comes back as the proportion of successes; ``refit`` takes it so).
    """
    ys = _simulate_matrix(model, _check_nsim(nsim), np.random.default_rng(seed))
    return pd.DataFrame(ys, columns=[f"sim_{i + 1}" for i in range(ys.shape[1])])


def _check_nsim(nsim) -> int:
    if not isinstance(nsim, (int, np.integer)) or nsim < 1:
        raise InferenceError(f"nsim must be a positive integer, got {nsim!r}")
    return int(nsim)


def _simulate_matrix(model, nsim: int, rng: np.random.Generator) -> np.ndarray:
    """One column per simulation, each drawn whole (random effects, then the response) so that the first k
    columns do not depend on nsim."""
    c = model.compiled
    fixed = c.offset + c.X @ model.beta_values
    # Λ(θ) is relative to σ in an LMM; lme4 does not scale it for GLMMs (any family)
    scale = model.sigma if is_lmm(model) else 1.0
    q = sum(t.q for t in c.terms)
    out = np.empty((c.n, nsim))
    for i in range(nsim):
        eta = fixed + scale * z_times(c.terms, b_from_u(c.terms, model.theta_values, rng.standard_normal(q)))
        if is_lmm(model):
            out[:, i] = eta + model.sigma / np.sqrt(c.weights) * rng.standard_normal(c.n)
        else:
            out[:, i] = _simulate_glmm_response(model, eta, rng)
    return out


def _simulate_glmm_response(model, eta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The response given the linear predictor: the family draws it (σ is 1 for families without a scale).

    For Gamma and inverse Gaussian the draws have the fitted variance σ² V(μ)/w; lme4's shapes σ·w and
    w/σ do not.
    """
    return model.family.simulate(model.family.link.linkinv(eta), model.compiled.weights, model.sigma, rng)


# --- refitting ---------------------------------------------------------------------------------


@dataclass
class RefitSpec:
    """What it takes to refit a model to a new response; picklable, so worker processes can refit."""

    compiled: object
    lmm: bool
    REML: bool
    theta0: np.ndarray
    data_name: str
    family: object = None  # the fitted family (picklable), fixed shape parameters included
    nAGQ: int = 1
    _lmm_refitter: object = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, model) -> RefitSpec:
        if is_lmm(model):
            return cls(model.compiled, True, model.REML, model.theta_values.copy(), model.data_name)
        return cls(model.compiled, False, False, model.theta_values.copy(), model.data_name,
                   model.family, model.nAGQ)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_lmm_refitter"] = None  # rebuilt where it is used
        return state

    def refit(self, y: np.ndarray):
        y = np.asarray(y, dtype=float).ravel()
        if y.shape != (self.compiled.n,):
            raise InferenceError(f"the new response has {y.size} values; the model was fitted to {self.compiled.n}")
        if not np.all(np.isfinite(y)):
            raise InferenceError("the new response has missing or infinite values")
        if self.lmm:
            if self._lmm_refitter is None:
                self._lmm_refitter = _LmmRefitter(self.compiled, self.REML)
            return self._lmm_refitter.refit(y, self.theta0, self.data_name)
        return self._refit_glmm(y)

    def _refit_glmm(self, y):
        family = self.family
        compiled = replace(self.compiled, y=y)
        family.check_response(y, compiled.weights)
        fit = fit_glmm(compiled, family, nAGQ=self.nAGQ)
        return build_glmer(compiled, family, fit, data_name=self.data_name)


class _LmmRefitter:
    """Cross-products of [Z X] computed once; a new response only changes its own row and column."""

    def __init__(self, compiled, REML: bool):
        self.compiled = compiled
        self.REML = REML
        self.base = CrossProducts.from_data(compiled.terms, compiled.X, compiled.y - compiled.offset, compiled.weights)
        first = compiled.terms[0]
        self.J1 = first.indicator()
        self.z1 = first.columns
        rest = compiled.terms[1:]
        self.Z_rest_t = sp.hstack([t.z_matrix() for t in rest], format="csr").T.tocsr() if rest else None
        self.w = compiled.weights

    def refit(self, y: np.ndarray, theta0, data_name: str):
        c, base = self.compiled, self.base
        wy = self.w * (y - c.offset)
        a_x1 = base.a_x1.copy()
        a_x1[-1] = (self.J1 @ (wy[:, None] * self.z1)).reshape(a_x1.shape[1:])
        a_xr = base.a_xr.copy()
        if self.Z_rest_t is not None:
            a_xr[-1] = self.Z_rest_t @ wy
        a_xx = base.a_xx.copy()
        a_xx[-1, :-1] = a_xx[:-1, -1] = c.X.T @ wy
        a_xx[-1, -1] = wy @ (y - c.offset)
        cross = CrossProducts(base.a11, a_x1, base.a_r1, base.a_rr, a_xr, a_xx, base.n, base.sum_log_weights)
        deviance = ProfiledDeviance(c.terms, c.X, None, None, reml=self.REML, cross=cross)
        compiled = replace(c, y=y)
        fit = fit_lmm(compiled, REML=self.REML, deviance=deviance, theta0=theta0)
        return build_lmer(compiled, fit, data_name=data_name)


def refit(model, new_response):
    """lme4's ``refit(m, newresp)``: the same model (and REML/ML, family) fitted to a new response."""
    from bayesmix.engine.threads import blas_threads_for, dense_dimension

    with blas_threads_for(dense_dimension(model.compiled)):
        return RefitSpec.of(model).refit(np.asarray(new_response, dtype=float))


# --- running many refits ------------------------------------------------------------------------


@dataclass
class _Outcome:
    values: list  # one entry per response: an array, or None when the refit failed
    warnings: Counter
    errors: Counter


def _refit_chunk(task) -> _Outcome:
    """Worker: refit each response of a chunk and apply the statistic; failures become None."""
    job, ys = task
    values, warns, errors = [], Counter(), Counter()
    for y in ys:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                values.append(np.atleast_1d(np.asarray(job(y), dtype=float)))
            except Exception as exc:  # noqa: BLE001 - a failed refit is recorded, as bootMer does
                values.append(None)
                errors[f"{type(exc).__name__}: {exc}"] += 1
        for w in caught:
            warns[str(w.message)] += 1
    return _Outcome(values, warns, errors)


class _StatisticJob:
    """Refit one model, apply ``func`` to the refit."""

    def __init__(self, spec: RefitSpec, func):
        self.spec, self.func = spec, func

    def __call__(self, y):
        return self.func(self.spec.refit(y))


class _LrtJob:
    """Refit the small and the large model, return the likelihood-ratio statistic."""

    def __init__(self, small: RefitSpec, large: RefitSpec):
        self.small, self.large = small, large

    def __call__(self, y):
        return 2.0 * (self.large.refit(y).loglik - self.small.refit(y).loglik)


def _init_worker():
    """One BLAS thread per worker process (the processes already use the cores); Ctrl-C is the parent's.

    A terminal's Ctrl-C reaches every process of the group: workers ignore it, so that it
    does not abort one refit each and let them carry on with the queue, and the parent
    stops them all at once (``_stop_workers``).
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass


def _run(job, ys: np.ndarray, n_jobs, progress: bool, desc: str, dense_dim: int = 0) -> _Outcome:
    """Apply ``job`` to each column of ``ys``: in chunks over worker processes, or sequentially."""
    nsim = ys.shape[1]
    workers = _n_workers(n_jobs, nsim)
    if workers > 1:
        try:
            pickle.dumps(job)
        except Exception as exc:  # noqa: BLE001 - lambdas/closures cannot go to other processes
            warn(f"the statistic cannot be sent to worker processes ({exc}); running sequentially. "
                          "Define it at module level to use all cores.", BayesmixWarning)
            workers = 1
    bar = Progress(nsim, progress, desc)
    total = _Outcome([], Counter(), Counter())
    try:
        done = 0
        if workers > 1:
            done = _run_in_pool(job, ys, workers, total, bar)
        from bayesmix.engine.threads import blas_threads_for

        with blas_threads_for(dense_dim):
            for i in range(done, nsim):
                _merge(total, _refit_chunk((job, [ys[:, i]])))
                bar.update()
    finally:
        bar.close()
    return total


def _run_in_pool(job, ys: np.ndarray, workers: int, total: _Outcome, bar: Progress) -> int:
    """Chunks of refits on worker processes; returns how many responses were done (the rest run here)."""
    from concurrent.futures.process import BrokenProcessPool

    nsim = ys.shape[1]
    chunk = max(1, min(50, nsim // (4 * workers)))
    tasks = [(job, [ys[:, i] for i in range(s, min(s + chunk, nsim))]) for s in range(0, nsim, chunk)]
    done = 0
    pool = None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context(), initializer=_init_worker)
            for out in pool.map(_refit_chunk, tasks):
                _merge(total, out)
                done += len(out.values)
                bar.update(len(out.values))
        pool.shutdown(wait=True)
    except KeyboardInterrupt:
        _stop_workers(pool)  # one Ctrl-C stops everything now, leaving no worker behind
        raise
    except (BrokenProcessPool, OSError, RuntimeError, pickle.PicklingError) as exc:
        _stop_workers(pool)
        warn(f"worker processes failed ({type(exc).__name__}: {exc}); finishing sequentially", BayesmixWarning)
    return done


def _stop_workers(pool) -> None:
    """Cancel what is queued and end the worker processes without waiting for their refits."""
    if pool is None:
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        proc.terminate()
    for proc in processes:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)


def _merge(total: _Outcome, part: _Outcome) -> None:
    total.values.extend(part.values)
    total.warnings.update(part.warnings)
    total.errors.update(part.errors)


def _n_workers(n_jobs, nsim: int) -> int:
    cores = os.cpu_count() or 1
    if n_jobs is None or n_jobs == -1:
        n_jobs = cores
    if not isinstance(n_jobs, (int, np.integer)) or n_jobs < 1:
        raise InferenceError(f"n_jobs must be a positive integer, -1 or None (all cores), got {n_jobs!r}")
    return int(max(1, min(n_jobs, cores, nsim // 2)))


def _mp_context():
    """fork where the platform has it (no re-import of the caller's script), else spawn."""
    import multiprocessing as mp
    import sys

    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods and sys.platform.startswith("linux") else "spawn")


# --- bootMer --------------------------------------------------------------------------------


@dataclass
class BootResult:
    """lme4's ``bootMer`` result: the statistic on the data (``t0``) and on each simulated data set (``t``)."""

    t0: pd.Series
    t: pd.DataFrame
    n_failed: int
    warnings: dict
    errors: dict
    seed: object = None

    @property
    def nsim(self) -> int:
        return len(self.t)

    def confint(self, level: float = 0.95, type: str = "perc") -> pd.DataFrame:
        """Bootstrap intervals as ``boot::boot.ci`` (lme4's ``confint.bootMer``): "perc", "basic" or "norm"."""
        if not 0 < level < 1:
            raise InferenceError(f"level must be between 0 and 1, got {level!r}")
        a = (1 - level) / 2
        rows = []
        for name in self.t.columns:
            t = self.t[name].to_numpy(dtype=float)
            t = t[np.isfinite(t)]
            t0 = float(self.t0[name])
            if len(t) < 2:
                rows.append([np.nan, np.nan])
            elif type == "perc":
                rows.append(_norm_inter(t, np.array([a, 1 - a])))
            elif type == "basic":
                q = _norm_inter(t, np.array([1 - a, a]))
                rows.append(2 * t0 - q)
            elif type == "norm":
                bias = t.mean() - t0
                merr = np.sqrt(t.var(ddof=1)) * norm.ppf((1 + level) / 2)
                rows.append([t0 - bias - merr, t0 - bias + merr])
            else:
                raise InferenceError(f"unknown bootstrap interval type {type!r}; use 'perc', 'basic' or 'norm'")
        return pd.DataFrame(rows, index=list(self.t.columns), columns=percent_labels(level))

    def __repr__(self) -> str:
        summary = pd.DataFrame({"original": self.t0, "bias": self.t.mean() - self.t0, "std. error": self.t.std(ddof=1)})
        head = f"Parametric bootstrap: {self.nsim} simulations"
        if self.n_failed:
            head += f" ({self.n_failed} refits failed)"
        return head + "\n" + summary.to_string()


def _norm_inter(t: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """boot's ``norm.inter``: order statistics interpolated on the normal quantile scale."""
    t = np.sort(t)
    R = len(t)
    rk = (R + 1) * alpha
    k = np.trunc(rk).astype(int)
    out = np.empty(len(alpha))
    for i in range(len(alpha)):
        if k[i] == rk[i]:
            out[i] = t[k[i] - 1]
        elif k[i] == 0:
            out[i] = t[0]
        elif k[i] >= R:
            out[i] = t[-1]
        else:
            z1, z2, z3 = norm.ppf(alpha[i]), norm.ppf(k[i] / (R + 1)), norm.ppf((k[i] + 1) / (R + 1))
            out[i] = t[k[i] - 1] + (z1 - z2) / (z3 - z2) * (t[k[i]] - t[k[i] - 1])
    return out


def bootstrap(model, func, nsim: int = 500, seed=None, n_jobs=None, progress: bool = True) -> BootResult:
    """lme4's ``bootMer(m, FUN, nsim, seed)``: ``func`` applied to refits on simulated responses.

    ``func(fit) -> number or vector`` (a pandas Series or dict keeps its names).  Refits
    run in ``n_jobs`` worker processes (default: all cores; 1 = in this process); ``func``
    must then be picklable (a module-level function).  Failed refits give NaN rows and are
    counted, as bootMer does; warnings of the refits are tallied in ``.warnings``.
    """
    nsim = _check_nsim(nsim)
    if not callable(func):
        raise InferenceError("func must be a function of a fitted model returning numbers")
    t0_raw = func(model)
    names = _statistic_names(t0_raw)
    t0 = np.atleast_1d(np.asarray(list(t0_raw.values()) if isinstance(t0_raw, dict) else t0_raw, dtype=float))
    if names is None:
        names = [f"t{i + 1}" for i in range(len(t0))]
    rng = np.random.default_rng(seed)
    ys = _simulate_matrix(model, nsim, rng)
    job = _StatisticJob(RefitSpec.of(model), _ValuesOf(func))
    out = _run(job, ys, n_jobs, progress, "bootstrap", dense_dimension(model.compiled))
    t = np.full((nsim, len(t0)), np.nan)
    for i, v in enumerate(out.values):
        if v is not None and v.size == len(t0):
            t[i] = v
    n_failed = sum(v is None for v in out.values)
    if n_failed:
        warn(f"some bootstrap runs failed ({n_failed}/{nsim}); see .errors", BayesmixWarning)
    return BootResult(pd.Series(t0, index=names), pd.DataFrame(t, columns=names), n_failed,
                      dict(out.warnings), dict(out.errors), seed)


def _statistic_names(value):
    if isinstance(value, pd.Series):
        return [str(i) for i in value.index]
    if isinstance(value, dict):
        return [str(k) for k in value]
    return None


class _ValuesOf:
    """Numbers out of a statistic that may return a Series or a dict (picklable wrapper)."""

    def __init__(self, func):
        self.func = func

    def __call__(self, fit):
        value = self.func(fit)
        if isinstance(value, dict):
            value = list(value.values())
        return np.asarray(value, dtype=float)


def sdcor_and_fixef(fit) -> pd.Series:
    """lme4's default ``confint(method = "boot")`` statistic: SDs, correlations, σ, fixed effects."""
    scale = fit.sigma if is_lmm(fit) else 1.0
    values = list(sdcor_from_theta(fit.compiled.terms, fit.theta_values, scale))
    if fit.has_scale:
        values.append(fit.sigma)
    return pd.Series(values + list(fit.beta_values), index=sdcor_names(fit.compiled.terms, fit.has_scale) + list(fit.compiled.fixef_names))


# --- parametric-bootstrap likelihood-ratio test ------------------------------------------------


@dataclass
class PBTestResult:
    """pbkrtest's ``PBmodcomp``: the LRT with its χ² and parametric-bootstrap p-values."""

    test: pd.DataFrame
    ref: np.ndarray
    nsim: int
    n_extreme: int
    n_positive: int
    formula_large: str
    formula_small: str
    seconds: float
    n_failed: int = 0

    @property
    def p_value(self) -> float:
        return float(self.test.loc["PBtest", "p.value"])

    def __repr__(self) -> str:
        lines = [f"Bootstrap test; time: {self.seconds:.2f} sec; samples: {self.nsim}; extremes: {self.n_extreme};"]
        if self.n_positive < self.nsim:
            lines.append(f"Requested samples: {self.nsim} Used samples: {self.n_positive} Extremes: {self.n_extreme}")
        lines += [f"large : {self.formula_large}", f"small : {self.formula_small}"]
        lines += print_coefmat(self.test, 4, cs_ind=[0, 1], tst_ind=[], na_print="")
        return "\n".join(lines)


def pb_test(m0, m1, nsim: int = 1000, seed=None, n_jobs=None, progress: bool = True) -> PBTestResult:
    """Parametric-bootstrap likelihood-ratio test of nested models (pbkrtest's ``PBmodcomp``).

    Responses are simulated from the smaller model (refitted by ML if it was fitted by
    REML); both models are refitted to each, giving the reference distribution of the
    LRT statistic.  p-value = (1 + #{ref > observed}) / (1 + #{ref > 0}), as pbkrtest.
    Refits run on ``n_jobs`` worker processes (default all cores).
    """
    nsim = _check_nsim(nsim)
    models = (m0, m1)
    check_model_objects(models)
    check_same_data(models, ["m0", "m1"])
    small, large = sorted((refit_ml(m0), refit_ml(m1)), key=lambda m: m.df)
    if small.df == large.df:
        raise InferenceError("the two models have the same number of parameters: nothing to test")
    check_nested(small, large, "the smaller model", "the larger model")
    start = time.perf_counter()
    tobs = 2.0 * (large.loglik - small.loglik)
    df = large.df - small.df
    ys = _simulate_matrix(small, nsim, np.random.default_rng(seed))
    out = _run(_LrtJob(RefitSpec.of(small), RefitSpec.of(large)), ys, n_jobs, progress, "PB test",
               dense_dimension(large.compiled))
    ref = np.array([v[0] if v is not None else np.nan for v in out.values])
    n_failed = int(np.isnan(ref).sum())
    if n_failed:
        warn(f"{n_failed} of {nsim} bootstrap refits failed and are left out", BayesmixWarning)
    positive = ref[ref > 0]
    n_extreme = int(np.sum(tobs < positive))
    p_pb = (1 + n_extreme) / (1 + len(positive))
    test = pd.DataFrame({"stat": [tobs, tobs], "df": [df, np.nan], "p.value": [chi2.sf(tobs, df), p_pb]},
                        index=["LRT", "PBtest"])
    return PBTestResult(test, ref, nsim, n_extreme, len(positive), large.formula_display, small.formula_display,
                        time.perf_counter() - start, n_failed)
