"""The user-facing fitting functions, ``lmer`` and ``glmer``: compile, fit, build the result.

lme4's modular pipeline, each stage usable alone: ``spec.model.compile_model`` (lFormula),
``engine.fit.fit_lmm`` / ``engine.glmm.fit_glmm`` (mkLmerDevfun + optimizeLmer),
``results.builder`` (mkMerMod).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesmix import distributed
from bayesmix.distributed import is_dask_collection
from bayesmix.engine.families import get_family
from bayesmix.engine.fit import fit_lmm
from bayesmix.engine.glmm import fit_glmm
from bayesmix.engine.negbin import fit_glmer_nb
from bayesmix.engine.threads import blas_threads_for, dense_dimension
from bayesmix.errors import ArgumentError, DataError, warn
from bayesmix.results.builder import build_glmer, build_lmer
from bayesmix.results.glmer import GlmerResult
from bayesmix.results.lmer import LmerResult
from bayesmix.spec.model import compile_model


def lmer(formula: str, data: pd.DataFrame, REML: bool = True, weights=None, offset=None, *, data_name: str = "df") -> LmerResult:
    """Fit a linear mixed model as lme4's ``lmer``.

    ``formula`` takes lme4's syntax: ``(1|g)``, ``(x|g)``, ``(x||g)``, ``(1|a/b)``,
    ``(1|a:b)``, crossed terms, ``offset()``.  ``weights`` is a column name or an array of
    prior weights.  REML (the default, as in lme4) or ML by the profiled deviance.
    ``data`` may be a ``dask.dataframe.DataFrame``: the fit then runs on the active Dask
    scheduler and returns a :class:`bayesmix.distributed.lmm.DaskLmerResult` (``bayesmix[dask]``).
    """
    _check_flag("REML", REML)
    if is_dask_collection(data):  # rows on a cluster: bayesmix.distributed fits from their cross-products
        return distributed.lmer(formula, data, REML=bool(REML), weights=weights, offset=offset,
                                data_name=data_name)
    _check_row_vectors(data, weights=weights, offset=offset)
    with _quiet_transforms():
        compiled = compile_model(formula, data, weights=weights, offset=offset)
    _check_not_exact(compiled)
    # an extreme response overflows the deviance: the FitError that follows says so, not numpy's noise
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        fit = fit_lmm(compiled, REML=bool(REML))
    return build_lmer(compiled, fit, data_name=data_name)


def glmer(formula: str, data: pd.DataFrame, family="binomial", weights=None, offset=None, nAGQ: int = 1, *,
          data_name: str = "df"):
    """Fit a generalized linear mixed model as lme4's ``glmer``.

    ``family`` is a name ("binomial", "poisson", "Gamma", "inverse.gaussian", "gaussian"),
    an R-style string ("Gamma(log)", "negative.binomial(theta = 2)") or a family object
    (``bm.families.Gamma(link="log")``, ``bm.families.negative_binomial(theta=2)``).
    Binomial responses may be 0/1 (or a two-level factor), ``cbind(successes, failures)``,
    or proportions with ``weights=`` trials.  ``nAGQ=1`` (default) is the Laplace
    approximation; ``nAGQ=0`` optimizes θ only (β from PIRLS); ``nAGQ>1`` is adaptive
    Gauss-Hermite quadrature, available for a single scalar random-effects term.
    ``data`` may be a ``dask.dataframe.DataFrame`` (families without a scale parameter): PIRLS then
    makes one pass over the partitions per iteration and returns a
    :class:`bayesmix.distributed.glmer_result.DaskGlmerResult` (``bayesmix[dask]``).
    """
    fam = get_family(family)
    _check_nagq(nAGQ)
    if is_dask_collection(data) and not fam.hands_glmer_to_lmer:  # rows on a cluster: PIRLS over its partitions
        return distributed.glmer(formula, data, fam, weights=weights, offset=offset, nAGQ=int(nAGQ),
                                 data_name=data_name)
    _check_row_vectors(data, weights=weights, offset=offset)
    if fam.hands_glmer_to_lmer:
        # lme4's glmer hands this call to lmer (REML, lmer's default) with a warning
        warn("calling glmer() with family=gaussian (identity link) as a shortcut to lmer() is deprecated; "
             "please call lmer() directly (fitted by lmer, REML)", FutureWarning)
        return lmer(formula, data, weights=weights, offset=offset, data_name=data_name)
    compiled = _glmm_compiled(formula, data, fam, weights, offset, nAGQ)
    with blas_threads_for(dense_dimension(compiled)):
        fit = fit_glmm(compiled, fam, nAGQ=int(nAGQ))
    return build_glmer(compiled, fam, fit, data_name=data_name)


def glmer_nb(formula: str, data: pd.DataFrame, weights=None, offset=None, nAGQ: int = 1, *, link: str = "log",
             interval: tuple[float, float] | None = None, tol: float = 5e-5, data_name: str = "df"):
    """Fit a negative-binomial GLMM with its shape θ estimated, as lme4's ``glmer.nb``.

    A Poisson glmer fit gives θ's start (MASS's ``theta.ml``); θ then minimizes the Laplace
    deviance of ``glmer(..., family=negative.binomial(θ))`` over ``log θ`` in ``interval``
    (default: the start's log ± 3) to ``tol`` (see :mod:`bayesmix.engine.negbin`).  The result
    is that glmer fit: ``m.family.theta`` is θ, ``summary()`` prints ``Negative Binomial(θ)``,
    and logLik's df counts θ, as lme4's.  For θ fixed, use ``glmer(..., family="negative.binomial(2)")``.
    """
    if isinstance(nAGQ, int | np.integer) and not isinstance(nAGQ, bool) and nAGQ > 1:
        # lme4 accepts it and returns theta at the edge of its interval (negbin_sim: 0.102, logLik -25.04)
        raise ArgumentError(
            f"nAGQ = {nAGQ} > 1 cannot estimate theta: the adaptive-quadrature deviance is relative to the saturated "
            "model, whose log-likelihood depends on theta, so deviances at different thetas do not compare. "
            "Use nAGQ=1 (Laplace), or glmer(..., family='negative.binomial(theta = ...)', nAGQ=...) at a fixed theta."
        )
    nb_family = get_family(f"negative.binomial(theta = 1, link = {link})")
    compiled = _glmm_compiled(formula, data, nb_family, weights, offset, nAGQ)
    if interval is not None and (len(interval) != 2 or not interval[0] < interval[1]):
        raise ArgumentError(f"interval must be (lower, upper) bounds on log(theta), got {interval!r}")
    if not (isinstance(tol, float | int) and tol > 0):
        raise ArgumentError(f"tol must be a positive number, got {tol!r}")
    with blas_threads_for(dense_dimension(compiled)):
        poisson_fit = fit_glmm(compiled, get_family(f"poisson({link})"), nAGQ=int(nAGQ))
        nb = fit_glmer_nb(compiled, poisson_fit, link=link, nAGQ=int(nAGQ), tol=float(tol), interval=interval)
    result = build_glmer(compiled, nb.family, nb.fit, data_name=data_name)
    result.nb_search = {"theta_start": nb.theta_start, "interval": nb.interval, "evaluations": nb.evaluations}
    return result


def _glmm_compiled(formula, data, fam, weights, offset, nAGQ):
    """The compiled model of a glmer call: arguments checked, the response checked against the family."""
    if is_dask_collection(data):
        raise ArgumentError("glmer_nb on a Dask DataFrame is not available (lmer and glmer are); fit it on rows "
                            "that fit in memory, e.g. bm.glmer_nb(formula, ddf.compute()) or a sample of them, or "
                            "glmer(..., family='negative.binomial(theta = ...)') at a fixed theta on the Dask DataFrame")
    _check_nagq(nAGQ)
    _check_row_vectors(data, weights=weights, offset=offset)
    with _quiet_transforms():
        compiled = compile_model(formula, data, weights=weights, offset=offset,
                                 binomial_response=fam.response_is_probability, check_levels_vs_nobs=False)
    _check_not_constant(compiled)
    if nAGQ > 1 and (len(compiled.terms) != 1 or compiled.terms[0].k != 1):
        raise ArgumentError(
            f"nAGQ = {nAGQ} > 1 is only available for models with a single, scalar random-effects term; "
            f"this model has {', '.join(f'({t.expr} | {t.group})' for t in compiled.terms)}. Use nAGQ=1 (Laplace)."
        )
    fam.check_response(compiled.y, compiled.weights)
    return compiled


def _quiet_transforms():
    """log(0), log(-1) in a formula: spec.checks reports the rows (refused or dropped), not numpy's noise."""
    return np.errstate(divide="ignore", invalid="ignore")


# lme4's GHrule takes orders 0..100
_MAX_NAGQ = 100


def _check_nagq(nAGQ) -> None:
    if isinstance(nAGQ, bool) or not isinstance(nAGQ, int | np.integer) or not 0 <= nAGQ <= _MAX_NAGQ:
        raise ArgumentError(f"nAGQ must be a non-negative integer no larger than {_MAX_NAGQ} (lme4's limit), got {nAGQ!r}")


def _check_row_vectors(data, **vectors) -> None:
    """weights=/offset= given as values: one finite-or-missing number per row of data."""
    for name, values in vectors.items():
        if values is None or isinstance(values, str):
            continue
        try:
            arr = np.asarray(values, dtype=float)
        except (TypeError, ValueError):
            raise ArgumentError(f"{name} must be a column name or numbers, got {type(values).__name__}") from None
        nrow = len(data) if isinstance(data, pd.DataFrame) else None
        if arr.ndim != 1 or (nrow is not None and len(arr) != nrow):
            raise ArgumentError(f"{name} has {arr.size} values (shape {arr.shape}) for {nrow} rows of data")


def _check_not_constant(compiled) -> None:
    """lme4's check.response.not.const: a GLMM of a constant response has no finite estimates."""
    y = compiled.y if compiled.response_trials is None else np.column_stack([compiled.y, compiled.response_trials])
    if len(y) and np.all(y == y[0]):
        raise DataError(f"Response is constant (every value of {compiled.formula.response!r} is "
                        f"{np.ravel(y[0])[0]:g}): a GLMM cannot be fitted to it")


def _check_not_exact(compiled) -> None:
    """An LMM whose response the fixed effects fit exactly (a constant response, say) has residual SD 0
    and an unbounded likelihood: lme4 returns sigma 0 and logLik Inf with warnings; bayesmix refuses."""
    y, X = compiled.y, compiled.X
    sw = np.sqrt(compiled.weights)
    with np.errstate(over="ignore", invalid="ignore"):  # 1e300s: the check below still decides
        fitted = X @ np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)[0] if X.shape[1] else np.zeros_like(y)
    scale = max(np.max(np.abs(y), initial=0.0), 1e-300)
    if np.max(np.abs(y - fitted)[sw > 0], initial=0.0) <= 1e-10 * scale:
        what = "constant" if np.all(y == y[0]) else "fitted exactly by the fixed effects"
        raise DataError(f"Response is {what} ({compiled.formula.response!r}): the residual SD would be 0 and the "
                        "likelihood unbounded, so no variance components can be estimated")


def _check_flag(name: str, value) -> None:
    """lme4 takes TRUE/FALSE only; a string such as "no" must not silently mean True."""
    if not isinstance(value, bool | np.bool_):
        raise ArgumentError(f"{name} must be True or False, got {value!r}")


__all__ = ["GlmerResult", "LmerResult", "glmer", "glmer_nb", "lmer"]
