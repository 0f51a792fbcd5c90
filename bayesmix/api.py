"""The user-facing fitting functions, ``lmer`` and ``glmer``: compile, build the objective, optimize, wrap."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from bayesmix.lmm import ProfiledDeviance
from bayesmix.model import compile_model
from bayesmix.optimize import minimize_bounded
from bayesmix.results import LmerResult
from bayesmix.threads import blas_threads_for, dense_dimension


class ConvergenceWarning(UserWarning):
    """The optimizer did not report convergence."""


class SingularFitWarning(UserWarning):
    """A variance component (or correlation) is estimated on its boundary."""


class SeparationWarning(UserWarning):
    """Fitted probabilities numerically 0 or 1: complete or quasi-complete separation."""


def lmer(formula: str, data: pd.DataFrame, REML: bool = True, weights=None, offset=None, *, data_name: str = "df") -> LmerResult:
    """Fit a linear mixed model as lme4's ``lmer``.

    ``formula`` takes lme4's syntax: ``(1|g)``, ``(x|g)``, ``(x||g)``, ``(1|a/b)``,
    ``(1|a:b)``, crossed terms, ``offset()``.  ``weights`` is a column name or an array of
    prior weights.  REML (the default, as in lme4) or ML by the profiled deviance.
    """
    compiled = compile_model(formula, data, weights=weights, offset=offset)
    with blas_threads_for(dense_dimension(compiled)):
        return fit_lmm(compiled, REML=REML, data_name=data_name)


def fit_lmm(compiled, REML: bool = True, data_name: str = "df", *, deviance=None, theta0=None) -> LmerResult:
    """Optimize the profiled deviance of a compiled model and wrap the result (``optimizeLmer`` + ``mkMerMod``).

    ``deviance`` (a ProfiledDeviance of these data) and ``theta0`` (a starting θ) let
    refits to new responses reuse cross-products and start near the optimum.
    """
    if deviance is None:
        deviance = ProfiledDeviance(compiled.terms, compiled.X, compiled.y - compiled.offset, compiled.weights, reml=REML)
    start = compiled.theta_start() if theta0 is None else theta0
    opt = minimize_bounded(deviance, start, compiled.theta_lower())
    theta = opt.x
    f = deviance.factorize(theta)
    beta, u = deviance.solve(f)
    b = deviance.b_from_u(theta, u)
    dof = deviance.n - (compiled.p if REML else 0)
    sigma = np.sqrt(f.pwrss / dof)
    vcov = sigma**2 * deviance.fixef_covariance_unscaled(f)
    messages = _check_fit(opt, compiled, theta)
    return LmerResult(
        compiled, theta, beta, b, sigma, vcov, opt.fun,
        method="REML" if REML else "ML", optimizer_messages=messages, converged=opt.converged,
        data_name=data_name, deviance_obj=deviance, factorization=f,
    )


def _check_fit(opt, compiled, theta) -> list[str]:
    """Warn as lme4 does about non-convergence and singular fits; return the lines summary() prints."""
    messages = []
    if not opt.converged:
        warnings.warn(f"optimizer did not converge: {opt.message}", ConvergenceWarning, stacklevel=3)
        messages.append(f"optimizer (bobyqa) convergence code: 1 ({opt.message})")
    lower = compiled.theta_lower()
    if np.any(theta[lower == 0] < 1e-4):
        warnings.warn("boundary (singular) fit: see help('isSingular')", SingularFitWarning, stacklevel=3)
        if not messages:
            messages.append("optimizer (bobyqa) convergence code: 0 (OK)")
        messages.append("boundary (singular) fit: see help('isSingular')")
    return messages


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
    from bayesmix.families import get_family
    from bayesmix.glmm import fit_glmm
    from bayesmix.results import GlmerResult

    fam = get_family(family)
    if not isinstance(nAGQ, int | np.integer) or nAGQ < 0:
        raise ValueError(f"nAGQ must be a non-negative integer, got {nAGQ!r}")
    compiled = compile_model(formula, data, weights=weights, offset=offset,
                             binomial_response=fam.name == "binomial", check_levels_vs_nobs=False)
    if nAGQ > 1 and (len(compiled.terms) != 1 or compiled.terms[0].k != 1):
        raise ValueError(
            f"nAGQ = {nAGQ} > 1 is only available for models with a single, scalar random-effects term; "
            f"this model has {', '.join(f'({t.expr} | {t.group})' for t in compiled.terms)}. Use nAGQ=1 (Laplace)."
        )
    fam.check_response(compiled.y, compiled.weights)
    with blas_threads_for(dense_dimension(compiled)):
        fit = fit_glmm(compiled, fam, nAGQ=int(nAGQ))
    for message in fit.messages:
        warnings.warn(message, ConvergenceWarning, stacklevel=2)
    result = GlmerResult.from_fit(compiled, fam, fit, data_name=data_name)
    if fam.name == "binomial":
        _warn_if_separated(result)
    if result.singular:
        warnings.warn("boundary (singular) fit: see help('isSingular')", SingularFitWarning, stacklevel=2)
        result.optimizer_messages.append("boundary (singular) fit: see help('isSingular')")
    return result


# Within 1e-12 of 0 or 1: R's glm.fit warns when its logit link clamps (|eta| > 30,
# probabilities 1e-13 from the bounds); 1e-12 is |eta| > 27.6.
_NUMERICALLY_0_OR_1 = 1e-12
# A fixed effect moving the log-odds by more than this on those rows is running off to infinity.
_EXTREME_LINK_CONTRIBUTION = 10.0


def _warn_if_separated(result) -> None:
    """Warn as R's glm does when fitted probabilities are numerically 0 or 1, naming the
    fixed effects whose estimates run off towards infinity (complete separation)."""
    mu = result.fitted()
    extreme = np.minimum(mu, 1.0 - mu) < _NUMERICALLY_0_OR_1
    if not extreme.any():
        return
    beta, se = result.fixef, result.se
    contribution = np.abs(result.compiled.X[extreme] * beta.to_numpy()).max(axis=0)
    culprits = [name for name, c in zip(beta.index, contribution) if c > _EXTREME_LINK_CONTRIBUTION]
    named = ", ".join(f"{name} (estimate {beta[name]:.4g}, SE {se[name]:.3g})" for name in culprits)
    warnings.warn(
        f"fitted probabilities numerically 0 or 1 occurred for {int(extreme.sum())} of {len(mu)} observations: "
        "complete or quasi-complete separation"
        + (f"; the estimates of {named} run off towards infinity, so they and their tests are not meaningful"
           if culprits else "")
        + ". Consider removing or merging the levels of the separating effect(s), or a fit with a weakly "
        "informative prior (e.g. the Bayesian model).",
        SeparationWarning,
        stacklevel=3,
    )
