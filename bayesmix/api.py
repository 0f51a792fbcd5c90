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
    ``data`` may be a ``dask.dataframe.DataFrame``: the fit then runs on the active Dask
    scheduler and returns a :class:`bayesmix.distributed.lmm.DaskLmerResult` (``bayesmix[dask]``).
    """
    _check_flag("REML", REML)
    if is_dask_collection(data):  # rows on a cluster: bayesmix.distributed fits from their cross-products
        return distributed.lmer(formula, data, REML=bool(REML), weights=weights, offset=offset,
                                data_name=data_name)
    compiled = compile_model(formula, data, weights=weights, offset=offset)
    return build_lmer(compiled, fit_lmm(compiled, REML=bool(REML)), data_name=data_name)


def glmer(formula: str, data: pd.DataFrame, family="binomial", weights=None, offset=None, nAGQ: int = 1, *,
          data_name: str = "df"):
    """Fit a generalized linear mixed model as lme4's ``glmer``.

    ``family`` is a name ("binomial", "poisson", "Gamma", "inverse.gaussian", "gaussian"),
    an R-style string ("Gamma(log)") or a family object (``bm.families.Gamma(link="log")``).
    Binomial responses may be 0/1 (or a two-level factor), ``cbind(successes, failures)``,
    or proportions with ``weights=`` trials.  ``nAGQ=1`` (default) is the Laplace
    approximation; ``nAGQ=0`` optimizes θ only (β from PIRLS); ``nAGQ>1`` is adaptive
    Gauss-Hermite quadrature, available for a single scalar random-effects term.
    """
    fam = get_family(family)
    if is_dask_collection(data):
        raise ArgumentError("glmer on a Dask DataFrame is not available yet (lmer is); fit glmer on rows that fit "
                            "in memory, e.g. bm.glmer(formula, ddf.compute(), ...) or a sample of them")
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
    with blas_threads_for(dense_dimension(compiled)):
        fit = fit_glmm(compiled, fam, nAGQ=int(nAGQ))
    return build_glmer(compiled, fam, fit, data_name=data_name)


def _check_flag(name: str, value) -> None:
    """lme4 takes TRUE/FALSE only; a string such as "no" must not silently mean True."""
    if not isinstance(value, bool | np.bool_):
        raise ArgumentError(f"{name} must be True or False, got {value!r}")


__all__ = ["GlmerResult", "LmerResult", "glmer", "lmer"]
