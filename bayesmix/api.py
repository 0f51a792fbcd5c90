"""The user-facing fitting functions, ``lmer`` and ``glmer``: compile, build the objective, optimize, wrap."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from bayesmix.lmm import ProfiledDeviance
from bayesmix.model import compile_model
from bayesmix.optimize import minimize_bounded
from bayesmix.results import LmerResult


class ConvergenceWarning(UserWarning):
    """The optimizer did not report convergence."""


class SingularFitWarning(UserWarning):
    """A variance component (or correlation) is estimated on its boundary."""


def lmer(formula: str, data: pd.DataFrame, REML: bool = True, weights=None, offset=None, *, data_name: str = "df") -> LmerResult:
    """Fit a linear mixed model as lme4's ``lmer``.

    ``formula`` takes lme4's syntax: ``(1|g)``, ``(x|g)``, ``(x||g)``, ``(1|a/b)``,
    ``(1|a:b)``, crossed terms, ``offset()``.  ``weights`` is a column name or an array of
    prior weights.  REML (the default, as in lme4) or ML by the profiled deviance.
    """
    compiled = compile_model(formula, data, weights=weights, offset=offset)
    return fit_lmm(compiled, REML=REML, data_name=data_name)


def fit_lmm(compiled, REML: bool = True, data_name: str = "df") -> LmerResult:
    """Optimize the profiled deviance of a compiled model and wrap the result (``optimizeLmer`` + ``mkMerMod``)."""
    deviance = ProfiledDeviance(compiled.terms, compiled.X, compiled.y - compiled.offset, compiled.weights, reml=REML)
    opt = minimize_bounded(deviance, compiled.theta_start(), compiled.theta_lower())
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
        messages.append(f"optimizer (L-BFGS-B) convergence code: 1 ({opt.message})")
    lower = compiled.theta_lower()
    if np.any(theta[lower == 0] < 1e-4):
        warnings.warn("boundary (singular) fit: see help('isSingular')", SingularFitWarning, stacklevel=3)
        if not messages:
            messages.append("optimizer (L-BFGS-B) convergence code: 0 (OK)")
        messages.append("boundary (singular) fit: see help('isSingular')")
    return messages
