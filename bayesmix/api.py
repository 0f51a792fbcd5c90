"""The user-facing fitting functions, ``lmer`` and ``glmer``: compile, fit, build the result.

lme4's modular pipeline, each stage usable alone: ``spec.model.compile_model`` (lFormula),
``engine.fit.fit_lmm`` / ``engine.glmm.fit_glmm`` (mkLmerDevfun + optimizeLmer),
``results.builder`` (mkMerMod).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesmix.engine.families import get_family
from bayesmix.engine.fit import fit_lmm
from bayesmix.engine.glmm import fit_glmm
from bayesmix.engine.negbin import fit_glmer_nb
from bayesmix.engine.threads import blas_threads_for, dense_dimension
from bayesmix.errors import ArgumentError
from bayesmix.results.builder import build_glmer, build_lmer
from bayesmix.results.glmer import GlmerResult
from bayesmix.results.lmer import LmerResult
from bayesmix.spec.model import compile_model


def lmer(formula: str, data: pd.DataFrame, REML: bool = True, weights=None, offset=None, *, data_name: str = "df") -> LmerResult:
    """Fit a linear mixed model as lme4's ``lmer``.

    ``formula`` takes lme4's syntax: ``(1|g)``, ``(x|g)``, ``(x||g)``, ``(1|a/b)``,
    ``(1|a:b)``, crossed terms, ``offset()``.  ``weights`` is a column name or an array of
    prior weights.  REML (the default, as in lme4) or ML by the profiled deviance.
    """
    _check_flag("REML", REML)
    compiled = compile_model(formula, data, weights=weights, offset=offset)
    return build_lmer(compiled, fit_lmm(compiled, REML=bool(REML)), data_name=data_name)


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
    """
    fam = get_family(family)
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
    """The compiled model of a glmer call, nAGQ and the response checked against the family."""
    if isinstance(nAGQ, bool) or not isinstance(nAGQ, int | np.integer) or nAGQ < 0:
        raise ArgumentError(f"nAGQ must be a non-negative integer, got {nAGQ!r}")
    compiled = compile_model(formula, data, weights=weights, offset=offset,
                             binomial_response=fam.response_is_probability, check_levels_vs_nobs=False)
    if nAGQ > 1 and (len(compiled.terms) != 1 or compiled.terms[0].k != 1):
        raise ArgumentError(
            f"nAGQ = {nAGQ} > 1 is only available for models with a single, scalar random-effects term; "
            f"this model has {', '.join(f'({t.expr} | {t.group})' for t in compiled.terms)}. Use nAGQ=1 (Laplace)."
        )
    fam.check_response(compiled.y, compiled.weights)
    return compiled


def _check_flag(name: str, value) -> None:
    """lme4 takes TRUE/FALSE only; a string such as "no" must not silently mean True."""
    if not isinstance(value, bool | np.bool_):
        raise ArgumentError(f"{name} must be True or False, got {value!r}")


__all__ = ["GlmerResult", "LmerResult", "glmer", "glmer_nb", "lmer"]
