"""Posterior sampling of a fitted model's Bayesian twin, and the frequentist/Bayesian comparison table.

Two routes reach the same posterior (the model of :mod:`bayesmix.bayes.pymc_model`):

* the fast route (default, ``sampler="nutpie"``): nutpie's NUTS on a log density that
  bayesmix evaluates itself, with analytic gradients: in NumPy, or for the common collapsed
  models (terms of up to two coefficients; scalar-term binomial-logit and Poisson GLMMs) by
  :mod:`bayesmix.bayes.fastdens`'s numba kernels, compiled once per machine (numba's disk cache:
  ``NUMBA_CACHE_DIR`` when set, else the package's ``__pycache__``, else ``~/.cache/numba`` where
  the package cannot be written to).  For
  LMMs the random effects — and the fixed effects too when their priors are Normal, as
  by default — are integrated out analytically (a Cholesky per evaluation: dense up to 300
  random effects, beyond that :mod:`bayesmix.bayes.blockedlmm`'s blocked one) and drawn
  afterwards from their exact Gaussian conditional given each draw of (σ, SDs,
  correlations); integrating β removes the funnel between β and a group SD that few
  groups create (Dyestuff2 diverged without it).  GLMMs with one scalar term integrate
  by adaptive Gauss-Hermite quadrature; other GLMMs keep the non-centred ``u``, and so do
  families with a sampled parameter (glmer_nb's θ, as ``log θ`` after the variance block).
  Tests check these densities against the PyMC model's ``logp``.
* the PyMC route: ``pymc.sample`` on ``result.pymc_model`` with PyMC's, nutpie's or
  numpyro's NUTS — taken for ``sampler="pymc"`` / ``"numpyro"``, and for nutpie when a
  prior or family is outside what the fast route evaluates.

Unconstrained coordinates of the fast route: β as is, ``log σ``, ``log sd`` and, per
correlation matrix, Stan's canonical-partial-correlation map (``tanh``) to its Cholesky
factor; the log-Jacobians are added, so the posterior is the one on the natural scale.
"""

from __future__ import annotations

import hashlib
import time
import warnings

import numpy as np

from bayesmix.bayes.densities import (
    _Blocks,
    spherical_effects,
    starting_factors,
)
from bayesmix.bayes.posterior import (
    FastPosterior,
    blocked_collapsible,
    dense_collapsible,
    fast_route_reason,
)
from bayesmix.bayes.pymc_model import (
    ModelPriors,
    TermInfo,
    resolve_priors,
    term_infos,
)
from bayesmix.engine.threads import blas_threads_for
from bayesmix.errors import ArgumentError, SamplingError

SAMPLERS = ("nutpie", "pymc", "numpyro", "blackjax")
_H = 1e-20  # complex-step size: derivatives exact to rounding
_LOG_2PI = float(np.log(2.0 * np.pi))


# --- sampling -----------------------------------------------------------------------------------

def sample(result, draws: int = 1000, tune: int = 1000, chains: int = 4, random_seed=None, sampler: str = "nutpie",
           progressbar: bool = True, priors: dict | None = None, collapse: bool | None = None,
           target_accept: float = 0.9):
    """Draw from the posterior of ``result``'s Bayesian model; returns an ``xarray.DataTree`` (ArviZ data).

    ``target_accept`` (NUTS's step-size target) defaults to 0.9 rather than 0.8: with few
    groups (Penicillin's 6 samples) 0.8 left the odd divergence in 4000 draws.
    """
    if not 0.0 < target_accept < 1.0:
        raise ArgumentError(f"target_accept must lie in (0, 1), got {target_accept!r}")
    check_sampleable(result)
    if sampler not in SAMPLERS:
        raise ArgumentError(f"unknown sampler {sampler!r}; choose one of {', '.join(map(repr, SAMPLERS))}")
    for name, value in (("draws", draws), ("tune", tune), ("chains", chains)):
        # a bool is an int to Python, but draws=True is a mistake, not one draw
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < (0 if name == "tune" else 1):
            raise ArgumentError(f"{name} must be a {'non-negative' if name == 'tune' else 'positive'} integer, got {value!r}")
    spec = resolve_priors(result, priors)
    seed = int(np.random.SeedSequence(random_seed).generate_state(1)[0] >> 1) if not isinstance(random_seed, int | np.integer) else int(random_seed)
    reason = fast_route_reason(result, spec)
    if sampler == "nutpie" and reason is None:
        _require("nutpie", "sampler='nutpie'")
        can_collapse = collapsible(result)
        if collapse is None:
            collapse = can_collapse and (not result.is_lmm or dense_collapsible(result.compiled) or blocked_collapsible(result.compiled))
        if collapse and not can_collapse:
            raise ValueError("collapse=True integrates the random effects out: analytically for LMMs, by "
                             "quadrature for GLMMs with a single scalar random-effects term; this model has neither")
        return _sample_fast(result, spec, draws, tune, chains, seed, progressbar, bool(collapse), target_accept)
    if collapse:
        raise ValueError(f"collapse=True is available with sampler='nutpie' and the fast route only"
                         f"{'' if reason is None else f' (this model has {reason})'}")
    return _sample_pymc(result, spec, draws, tune, chains, seed, sampler, progressbar, target_accept)


def collapsible(result) -> bool:
    """LMMs, and GLMMs with one scalar random-effects term, can be sampled with the random effects integrated out."""
    terms = result.compiled.terms
    if result.response_family.bayes_parameters():  # a sampled family parameter (glmer_nb's θ) keeps u
        return False
    return result.is_lmm or (len(terms) == 1 and terms[0].k == 1)


def check_sampleable(result) -> None:
    from bayesmix.results.base import MixedModelResult

    if not isinstance(result, MixedModelResult):
        raise TypeError(f"sample() needs a fitted lmer/glmer result, got {type(result).__name__}")
    if not result.converged or not np.all(np.isfinite(result.beta_values)) or not np.all(np.isfinite(result.theta_values)):
        raise SamplingError("this model failed to fit (the optimizer did not converge), so its estimates cannot "
                            "start the sampler or be compared with the posterior; refit it first (rescale "
                            "covariates, simplify the random effects) and sample the converged fit")


def _require(module: str, what: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise SamplingError(f"{what} needs the {module} package: pip install {module}"
                            + ("" if module == "nutpie" else " (or use sampler='nutpie' or 'pymc')"))


def _sample_fast(result, spec, draws, tune, chains, seed, progressbar, collapsed, target_accept):
    import nutpie
    from nutpie.compiled_pyfunc import from_pyfunc

    post = FastPosterior(result, spec, collapsed)
    start, scale = post.start(), post.jitter_scale()

    def make_logp():
        return post.logp_and_grad if post.kernel is None else post.kernel.as_function()

    def make_expand(seed1, seed2, chain):
        return lambda x: {"x": np.array(x, dtype=float)}

    def initial_point(chain_seed):
        rng = np.random.default_rng(chain_seed)
        return start + scale * rng.uniform(-1.0, 1.0, size=len(start))

    model = from_pyfunc(post.dim, make_logp, make_expand, [np.dtype("float64")], [(post.dim,)], ["x"],
                        make_initial_point_fn=initial_point)
    t0 = time.perf_counter()
    # one BLAS thread: the matrices are small, and multithreaded OpenBLAS spins on them (100x slower)
    with blas_threads_for(0), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        sampler = nutpie.sample(model, draws=draws, tune=tune, chains=chains, seed=seed, progress_bar=progressbar,
                                save_warmup=False, cores=_parallel_chains(post, chains), target_accept=target_accept,
                                blocking=False)
        trace = _wait_or_stop(sampler)
        x = np.asarray(trace.posterior["x"].values)
        posterior = _fast_posterior_dataset(result, post, x, np.random.default_rng(seed), progressbar)
    elapsed = time.perf_counter() - t0
    density = f"nutpie NUTS on bayesmix's {'numba-compiled' if post.kernel is not None else 'NumPy'} log density"
    if not collapsed:
        route = f"{density} (non-centred random effects)"
    elif result.is_lmm:
        what = "random and fixed effects" if post.integrate_beta else "random effects"
        how = " (a blocked Cholesky, as the ML engine's)" if getattr(post.lik, "blocked", False) else ""
        route = (f"{density}, {what} integrated out analytically{how}, then drawn from their exact Gaussian "
                 "conditional")
    else:
        route = (f"{density}, random effects integrated out by 15-node adaptive Gauss-Hermite quadrature, then "
                 "drawn exactly from their conditional (rejection sampling)")
    stats = trace.sample_stats.to_dataset() if hasattr(trace.sample_stats, "to_dataset") else trace.sample_stats
    return _datatree(result, spec, posterior, stats, route, elapsed, sampler="nutpie")


def _wait_or_stop(sampler):
    """nutpie's trace when every chain is done; one Ctrl-C stops every chain and raises KeyboardInterrupt.

    (nutpie's blocking call would return the draws made so far as if sampling had finished:
    a silently truncated posterior.)
    """
    try:
        return sampler.wait()
    except KeyboardInterrupt:
        sampler.cancel()
        raise


def _parallel_chains(post: FastPosterior, chains: int) -> int:
    """How many chains nutpie runs at once (the draws are the same either way: each chain has its own seed).

    nutpie calls the log density through Python, so chains in parallel threads take turns with the
    GIL around every call.  Only a density that spends most of a call outside the GIL gains: the
    blocked collapsed density (LAPACK; InstEval 1.8x faster with two), and a numba kernel (nogil)
    whose calls are long.  A short kernel call loses: sleepstudy's (~15 µs when measured, 8.8 µs since;
    nutpie's own Python per call is ~12 µs) sampled in 1.45 s one chain at a time and 3.4 s two at a
    time on a quiet 2-core machine, Penicillin's 1.1 s and 2.5 s, so chains run in parallel only
    where a call takes at least ``_PARALLEL_CALL_S``.
    """
    import os

    if post.kernel is not None:
        parallel = _call_seconds(post) >= _PARALLEL_CALL_S
    else:
        parallel = bool(getattr(post.lik, "blocked", False))
    return min(chains, os.cpu_count() or 1) if parallel else 1


_PARALLEL_CALL_S = 1e-3


def _call_seconds(post: FastPosterior, calls: int = 3) -> float:
    """The fastest of a few log-density calls at the start point (the first may compile or load the kernel)."""
    x = post.start()
    post.logp_and_grad(x)
    best = np.inf
    for _ in range(calls):
        t0 = time.perf_counter()
        post.logp_and_grad(x)
        best = min(best, time.perf_counter() - t0)
    return best


def _effects_bar(total: int, enabled: bool):
    """tqdm over the random-effect draws that follow nutpie's own bar (long for big models; shown after 1 s)."""
    import warnings

    from tqdm import TqdmWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TqdmWarning)  # Jupyter without ipywidgets: the text bar, unannounced
        from tqdm.auto import tqdm
    return tqdm(total=total, desc="drawing random effects", disable=not enabled, delay=1.0)


def _fast_posterior_dataset(result, post: FastPosterior, x: np.ndarray, rng, progressbar: bool = False):
    import xarray as xr

    chains, draws, _ = x.shape
    flat = x.reshape(chains * draws, -1)
    beta, u, v = post.split(flat)
    sigma, Ls, _ = post.variance.evaluate(v)
    if post.collapsed:
        if hasattr(post.lik, "draw_u_batch"):
            chunks = [slice(i, i + 100) for i in range(0, len(beta), 100)]
            with _effects_bar(len(beta), progressbar) as bar:
                parts = []
                for c in chunks:
                    parts.append(post.lik.draw_u_batch(beta[c], None, [L[c] for L in Ls], rng))
                    bar.update(min(c.stop, len(beta)) - c.start)
            u = np.concatenate(parts)
        else:
            if post.kernel is not None and post.kernel.draws_u:
                u = post.kernel.draw_u_batch(beta, sigma, Ls, rng)
            else:
                sigmas = sigma if sigma is not None else [None] * len(beta)
                with _effects_bar(len(beta), progressbar) as bar:
                    rows = []
                    for i, (b, s) in enumerate(zip(beta, sigmas)):
                        rows.append(post.lik.draw_u(b, s, [L[i] for L in Ls], rng))
                        bar.update()
                u = np.stack(rows)
            if post.integrate_beta:  # the draws of β̃ lead those of u
                p = post.lik.p_integrated
                beta = post.lik.beta_mean + u[:, :p] * np.diag(post.lik.beta_factor)
                u = u[:, p:]
    values = {"beta": beta}
    if sigma is not None:
        values["sigma"] = sigma
    for info, L, ix in zip(post.infos, Ls, _Blocks(result.compiled.terms).index):
        values.update(_term_draws(info, L, u[:, ix]))
    values["theta"] = _theta_draws(post.infos, Ls, sigma)
    shape = (chains, draws)
    data = {name: (("chain", "draw", *_dims(name, post.infos)), arr.reshape(shape + arr.shape[1:]))
            for name, arr in values.items()}
    data.update({name: (("chain", "draw"), arr.reshape(shape)) for name, arr in post.family_draws(flat).items()})
    from bayesmix.bayes.pymc_model import model_coords

    coords = {"chain": np.arange(chains), "draw": np.arange(draws), **model_coords(result)}
    used = {d for dims, _ in data.values() for d in dims}
    return xr.Dataset(data, coords={k: v for k, v in coords.items() if k in used})


def _term_draws(info: TermInfo, L: np.ndarray, u: np.ndarray) -> dict:
    """SDs, correlations, b = L u, and the PyMC model's own u and corr_chol, for one term, per draw
    (L: (draws, k, k), u: (draws, levels, k))."""
    sd = np.sqrt(np.sum(L**2, axis=-1))
    out = {f"sd_{info.label}": sd}
    if info.k > 1:
        chol = L / sd[:, :, None]  # L = diag(sd) chol(corr): the LKJCorr variable's value
        out[f"corr_chol_{info.label}"] = chol
        cov = chol @ np.swapaxes(chol, -1, -2)
        rows, cols = np.triu_indices(info.k, 1)
        out[f"corr_{info.label}"] = cov[:, rows, cols]
    out[f"u_{info.label}"] = u
    out[f"b_{info.label}"] = np.einsum("dlk,djk->dlj", u, L)
    return out


def _theta_draws(infos, Ls, sigma) -> np.ndarray:
    parts = []
    for info, L in zip(infos, Ls):
        T = L / sigma[:, None, None] if sigma is not None else L
        cols, rows = np.triu_indices(info.k)
        parts.append(T[:, rows, cols])
    return np.concatenate(parts, axis=1)


def _dims(name: str, infos) -> tuple[str, ...]:
    if name == "beta":
        return ("fixef",)
    if name == "theta":
        return ("theta_name",)
    if name == "sigma":
        return ()
    for info in infos:
        if name == f"sd_{info.label}":
            return (info.sd_dim,)
        if name == f"corr_{info.label}":
            return (info.pair_dim,)
        if name == f"corr_chol_{info.label}":
            return info.chol_dims
        if name in (f"b_{info.label}", f"u_{info.label}"):
            return (info.group, info.coef_dim)
    raise KeyError(name)


def posterior_var_names(result) -> list[str]:
    """The posterior's variables: every free variable of the PyMC model (β, σ, sd_, corr_chol_, u_)
    under its PyMC name, so that PyMC's own functions take the posterior, and the derived corr_, b_, θ."""
    names = ["beta"] + (["sigma"] if result.has_scale else [])
    for info in term_infos(result):
        names.append(f"sd_{info.label}")
        if info.k > 1:
            names += [f"corr_{info.label}", f"corr_chol_{info.label}"]
        names += [f"b_{info.label}", f"u_{info.label}"]
    return names + ["theta", *result.response_family.bayes_parameters()]


def summary_var_names(result) -> list[str]:
    """The model-level parameters (no per-level effects, no factor internals): β, SDs, correlations, σ."""
    return [n for n in posterior_var_names(result) if not n.startswith(("b_", "u_", "corr_chol_", "theta"))]


def _sample_pymc(result, spec, draws, tune, chains, seed, sampler, progressbar, target_accept):
    import pymc as pm

    from bayesmix.bayes.pymc_model import build_pymc_model

    if sampler != "pymc":
        _require(sampler, f"sampler={sampler!r}")
    model = build_pymc_model(result, spec)
    t0 = time.perf_counter()
    interrupt = _Interrupt()
    extra = {"callback": interrupt.callback} if sampler == "pymc" else {}
    try:
        with warnings.catch_warnings(), interrupt:
            warnings.filterwarnings("ignore", message=".*BLAS.*")
            trace = pm.sample(draws=draws, tune=tune, chains=chains, random_seed=seed, progressbar=progressbar,
                              nuts_sampler=sampler, model=model, var_names=posterior_var_names(result),
                              compute_convergence_checks=False, target_accept=target_accept,
                              initvals=_pymc_initvals(result, model), **extra)
    except Exception:
        if interrupt.seen:  # e.g. PyMC's "Not enough samples to build a trace" from the stopped chains
            raise KeyboardInterrupt from None
        raise
    if interrupt.seen:
        raise KeyboardInterrupt
    elapsed = time.perf_counter() - t0
    posterior = trace["posterior"].to_dataset()
    stats = trace["sample_stats"].to_dataset()
    route = f"{sampler} NUTS on the PyMC model (result.pymc_model)"
    return _datatree(result, spec, posterior, stats, route, elapsed, sampler=sampler)


class _Interrupt:
    """One Ctrl-C stops PyMC's sampler and raises KeyboardInterrupt.

    PyMC swallows KeyboardInterrupt: it returns the draws made so far, and when sampling
    chains one after another it goes on with the next chain (one Ctrl-C per chain). The
    handler remembers the interrupt, PyMC's ``callback`` stops every later chain at its
    first draw, and the caller re-raises once PyMC returns.
    """

    def __init__(self):
        self.seen = False
        self._previous = None

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():  # only there can handlers be set
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt

    def callback(self, trace=None, draw=None):
        if self.seen:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _pymc_initvals(result, model) -> dict:
    """The fit's estimates (SDs kept off zero) as the PyMC route's start, as the fast route starts.

    PyMC's own start, the priors' centres, can lie far out under near-flat priors (β = 0 for
    Dyestuff's yields of ~1500): numpyro's chains then did not all arrive within 200 tuning steps.
    """
    r = result
    free = {rv.name for rv in model.free_RVs}
    values = {}

    def put(name, vector, labels):
        if name in free:
            values[name] = np.asarray(vector, dtype=float)
        else:  # one RV per element (priors of different kinds)
            values.update({f"{name}[{label}]": float(x) for x, label in zip(vector, labels)})

    put("beta", r.beta_values, r.compiled.fixef_names)
    if "sigma" in free:
        values["sigma"] = float(r.sigma)
    values.update({name: float(v) for name, v in r.response_family.parameter_estimates().items() if name in free})
    factors = starting_factors(r)
    spherical = spherical_effects(r, [sd[:, None] * corr_chol for sd, corr_chol in factors])
    for info, (sd, _), u in zip(term_infos(r), factors, spherical):
        put(f"sd_{info.label}", sd, info.columns)
        values[f"u_{info.label}"] = u
    return values


def _datatree(result, spec: ModelPriors, posterior, stats, route, elapsed, sampler):
    import xarray as xr

    keep = [n for n in posterior_var_names(result) if n in posterior]
    posterior = posterior[keep]
    posterior.attrs.update({
        "priors": spec.to_json(result),
        "user_priors": str(spec.user),
        "sampler": sampler,
        "route": route,
        "sampling_time": float(elapsed),
        "formula": result.formula_display,
        "family": result.family_name,
        "link": result.link_name,
        "parametrization": "b = L u, u ~ N(0, I), L = diag(sd) chol(corr); theta = L / sigma (lme4's Λθ blocks)",
        "inference_library": "bayesmix",
        "model_fingerprint": model_fingerprint(result),  # compare() refuses a posterior of another model
    })
    groups = {"posterior": posterior, "sample_stats": stats}
    if not getattr(result.compiled, "rowless", False):  # a Dask fit's rows stay on the cluster
        groups.update(observed_data=observed_dataset(result), constant_data=constant_dataset(result))
    return xr.DataTree.from_dict(groups)


def observed_response(result) -> tuple[np.ndarray, np.ndarray]:
    """(rows, y) as the PyMC model observes them: rows of positive weight (lme4 drops the others from
    the likelihood); binomial responses as counts of successes (proportion × trials)."""
    c = result.compiled
    rows = np.flatnonzero(c.weights > 0)
    y = c.y[rows]
    if result.response_family.response_is_probability:
        y = np.round(y * c.weights[rows])
    return rows, y


def observed_dataset(result):
    import xarray as xr

    rows, y = observed_response(result)
    return xr.Dataset({"y": (("obs",), y)}, coords={"obs": rows})


def constant_dataset(result):
    """The covariates under the PyMC model's ``pm.Data`` names (PyMC compares them to the model's on prediction)."""
    import xarray as xr

    from bayesmix.bayes.pymc_model import data_arrays, model_coords

    coords = {**model_coords(result), "obs": np.arange(result.nobs)}
    arrays = data_arrays(result)
    used = {d for dims, _ in arrays.values() for d in dims}
    return xr.Dataset({name: (dims, value) for name, (dims, value) in arrays.items()},
                      coords={k: v for k, v in coords.items() if k in used})




# --- which model a posterior belongs to ----------------------------------------------------------


def model_fingerprint(result) -> str:
    """A hash of the model and the data a posterior is sampled from: formula, family, link, the
    response, X, each term's columns and grouping codes, weights and offset (not how it was estimated)."""
    c = result.compiled
    digest = hashlib.sha256()
    for text in (result.formula_display, result.family_name, result.link_name):
        digest.update(str(text).encode() + b"\0")
    if getattr(c, "rowless", False):  # a Dask fit: the sufficient statistics its density is made of
        cp = result.profiled_deviance.cross
        a_r1 = cp.a_r1.toarray() if hasattr(cp.a_r1, "toarray") else cp.a_r1
        arrays = [cp.a11, cp.a_x1, np.asarray(a_r1), cp.a_rr, cp.a_xr, cp.a_xx]
    else:
        arrays = [c.y, c.X, c.weights, c.offset] + [a for t in c.terms for a in (t.factor.codes, t.columns)]
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode() + array.tobytes())
    return digest.hexdigest()[:20]


def check_posterior_belongs(result, posterior) -> None:
    """Refuse a posterior sampled from another model or other data than ``result``'s.

    A posterior without a fingerprint (made elsewhere) is accepted: there is nothing to check.
    """
    try:
        recorded = posterior["posterior"].attrs.get("model_fingerprint")
    except (KeyError, TypeError, AttributeError):
        raise ArgumentError(f"expected the posterior returned by sample() (an xarray DataTree with a 'posterior' "
                            f"group), got {type(posterior).__name__}") from None
    if recorded is not None and recorded != model_fingerprint(result):
        formula = posterior["posterior"].attrs.get("formula", "?")
        raise ArgumentError(f"this posterior was sampled from another model or other data ({formula}) than "
                            f"{result.formula_display}, {result.nobs} observations; sample this model (result.sample())")
